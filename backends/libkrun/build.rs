//! Link a system libkrun when the `system-libkrun` feature is on. By default the
//! implementation comes from the `libkrun` crate (named in `src/ffi.rs`), and
//! `libkrun-sys` only declares the functions.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "system-libkrun")]
    {
        if let Err(e) = pkg_config::Config::new().probe("libkrun") {
            println!(
                "cargo:warning=system-libkrun: pkg-config cannot find libkrun ({e}); linking -lkrun"
            );
            println!("cargo:rustc-link-lib=dylib=krun");
        }
    }
}
