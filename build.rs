//! Links the functions `serve` runs next to each other (scripts/link-order.txt, made by
//! scripts/link-order.sh): the kernel maps code in 64 KiB runs around each page touched, so
//! spread-out hot code keeps most of the 12 MB binary resident (docs/performance.md).

fn main() {
    let list = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/link-order.txt");
    println!("cargo:rerun-if-changed={list}");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let target = std::env::var("TARGET").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    // rustc links x86_64 Linux with its own lld (1.90 on), which reads the list; another
    // linker chosen in the flags may not know the option.
    let lld = target == "x86_64-unknown-linux-gnu"
        && ![
            "fuse-ld",
            "linker-features",
            "link-self-contained",
            "linker=",
        ]
        .iter()
        .any(|f| flags.contains(f));
    if lld && std::path::Path::new(list).exists() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={list}");
        // Names the list has and this build lacks (a function renamed since) are skipped.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
