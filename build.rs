//! Generates the C header with cbindgen into `OUT_DIR` (the committed
//! `include/mooncake_flagcx.h` must match it: tests/header.rs checks, and
//! `scripts/header.sh` copies it over), gives the cdylib its SONAME
//! (`libmooncake_flagcx.so.<ABI major>`) and points its rpath at the
//! libflagcx.so that flagcx-sys linked.

use std::env;
use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=src/error.rs");
    println!("cargo:rerun-if-changed=src/config.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");

    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let header = out.join("mooncake_flagcx.h");
    cbindgen::Builder::new()
        .with_crate(&root)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header")
        .write_to_file(&header);
    println!("cargo:rustc-env=MCFX_GENERATED_HEADER={}", header.display());

    // The SONAME carries the ABI major version, so a program linked against
    // this library records `libmooncake_flagcx.so.1` and a future ABI v2
    // library can be installed beside it. The link of that name next to
    // cargo's output is made by whoever runs such programs from the build
    // tree (the top-level CMake, tests/header.rs), not here: a build script
    // writes only to OUT_DIR. scripts/install.sh installs the real file
    // under that name.
    let soname = format!("libmooncake_flagcx.so.{MCFX_ABI_VERSION}");
    println!("cargo:rustc-link-arg-cdylib=-Wl,-soname,{soname}");

    // The cdylib's rpath. With the software provider, libflagcx.so is copied
    // next to the cdylib (target/<profile>/: `$ORIGIN`) and installed, only
    // when asked (scripts/install.sh --with-sw-flagcx), into
    // <libdir>/mooncake_flagcx/sw-flagcx/lib/, a FLAGCX_HOME of its own:
    // the second entry; no build-tree path ends up in an installed file.
    // With a real FlagCX (FLAGCX_HOME), its lib/ directory is added.
    // This package's tests and examples also get flagcx-sys's
    // library directory (they run from target/<profile>/deps/ and friends).
    println!("cargo:rerun-if-env-changed=FLAGCX_HOME");
    if let Ok(dir) = env::var("DEP_FLAGCX_LIB_DIR") {
        let cdylib_rpath = if env::var_os("FLAGCX_HOME").is_some() {
            format!("$ORIGIN:{dir}")
        } else {
            "$ORIGIN:$ORIGIN/mooncake_flagcx/sw-flagcx/lib".to_string()
        };
        println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,{cdylib_rpath}");
        for kind in ["tests", "examples"] {
            println!("cargo:rustc-link-arg-{kind}=-Wl,-rpath,$ORIGIN:{dir}");
        }
    }
}

// The library's own definition of MCFX_ABI_VERSION, compiled here too.
include!("src/ffi/abi_version.rs");
