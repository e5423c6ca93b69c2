#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    sidecar_injector::cli::main()
}
