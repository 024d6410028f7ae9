//! Generates the C header `include/mooncake_flagcx.h` with cbindgen (the
//! committed copy must match: CI regenerates and diffs it), and points the
//! cdylib's rpath at the libflagcx.so that flagcx-sys linked.

use std::env;
use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=src/error.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");

    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    cbindgen::Builder::new()
        .with_crate(&root)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header")
        .write_to_file(root.join("include/mooncake_flagcx.h"));

    // libflagcx.so sits next to the cdylib (target/<profile>/) for the
    // software provider, or in $FLAGCX_HOME/lib: look in both.
    if let Ok(dir) = env::var("DEP_FLAGCX_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN:{dir}");
    }
}
