#![forbid(unsafe_code)]

// mimalloc: thread-local free lists, so the review's many small allocations do not contend
// on glibc's arena locks across the runtime's worker threads (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sidecar_injector::main()
}
