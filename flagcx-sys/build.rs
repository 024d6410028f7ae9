//! Builds the C++ shim and picks the FlagCX library it links against.
//!
//! - `FLAGCX_HOME` set: compile against `$FLAGCX_HOME/include/flagcx_p2p.h`
//!   and link `$FLAGCX_HOME/lib/libflagcx.so` (a real FlagCX build).
//! - otherwise: build the in-tree software provider into `libflagcx.so`
//!   (in `OUT_DIR`, copied next to the crate's artifacts in
//!   `target/<profile>/`) and link that, with a cargo warning saying so.
//!
//! Dependents read the library directory from `DEP_FLAGCX_LIB_DIR` (this
//! package declares `links = "flagcx"`) to set their own rpath.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=FLAGCX_HOME");
    println!("cargo:rerun-if-changed=shim");
    println!("cargo:rerun-if-changed=provider");

    let (include_dir, lib_dir) = match env::var_os("FLAGCX_HOME") {
        Some(home) => real_flagcx(Path::new(&home)),
        None => {
            // Said at every build of this package without FLAGCX_HOME, so a
            // plugin meant for production is not built on the test double by
            // mistake (at run time: mcfx_create logs a warning and
            // mcfx_capabilities() has MCFX_CAP_SOFTWARE_PROVIDER).
            println!(
                "cargo:warning=FLAGCX_HOME is not set: linking the in-tree software FlagCX \
                 provider, a test double (fault-injection knobs, CPU copies, one machine), not \
                 FlagCX; set FLAGCX_HOME to a FlagCX build for real RDMA"
            );
            software_provider(&manifest, &out)
        }
    };

    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .file(manifest.join("shim/flagcx_shim.cpp"))
        .include(manifest.join("shim"))
        .include(&include_dir)
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wextra")
        .warnings_into_errors(true)
        .compile("flagcx_shim");

    let lib_dir = lib_dir.display().to_string();
    println!("cargo:rustc-link-search=native={lib_dir}");
    println!("cargo:rustc-link-lib=dylib=flagcx");
    println!("cargo:rustc-link-lib=dylib=dl");
    // This package's own tests and binaries find libflagcx.so without
    // LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    println!("cargo:lib_dir={lib_dir}");
    println!("cargo:include={}", include_dir.display());
}

fn real_flagcx(home: &Path) -> (PathBuf, PathBuf) {
    let include = home.join("include");
    let lib = home.join("lib");
    assert!(
        include.join("flagcx_p2p.h").is_file(),
        "FLAGCX_HOME={} has no include/flagcx_p2p.h",
        home.display()
    );
    assert!(
        lib.join("libflagcx.so").is_file(),
        "FLAGCX_HOME={} has no lib/libflagcx.so",
        home.display()
    );
    (include, lib)
}

fn software_provider(manifest: &Path, out: &Path) -> (PathBuf, PathBuf) {
    let include = manifest.join("provider/include");
    let mut sources: Vec<PathBuf> = fs::read_dir(manifest.join("provider/src"))
        .expect("flagcx-sys/provider/src is missing")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
        .collect();
    sources.sort();

    let lib_dir = out.join("provider");
    fs::create_dir_all(&lib_dir).unwrap();
    let lib = lib_dir.join("libflagcx.so");

    // cc builds static archives only, so the shared provider is linked by
    // hand with the compiler cc would have used.
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let mut cmd = Command::new(compiler.path());
    cmd.args([
        "-std=c++17",
        "-O2",
        "-g",
        "-fPIC",
        "-shared",
        "-pthread",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-Wl,-soname,libflagcx.so",
    ])
    .arg("-I")
    .arg(&include)
    .args(&sources)
    .arg("-o")
    .arg(&lib)
    .arg("-ldl");
    let status =
        cmd.status().unwrap_or_else(|e| panic!("cannot run {}: {e}", compiler.path().display()));
    assert!(status.success(), "building the software provider failed: {cmd:?}");

    // A stable copy next to the workspace's artifacts (target/<profile>/), for
    // the cdylib's $ORIGIN rpath and for CMake. Renamed into place so a
    // process that has the old file loaded keeps a consistent mapping.
    if let Some(profile_dir) = out.ancestors().nth(3) {
        let tmp = profile_dir.join(".libflagcx.so.tmp");
        if fs::copy(&lib, &tmp).is_ok() {
            let _ = fs::rename(&tmp, profile_dir.join("libflagcx.so"));
        }
    }
    (include, lib_dir)
}
