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
//!
//! `FLAGCX_SW_SANITIZE` (`address`, `undefined`, `address,undefined` or
//! `thread`) builds the software provider with those sanitizers
//! (`-fsanitize=...`, `-fno-omit-frame-pointer`, and for `undefined`
//! `-fno-sanitize-recover=undefined`: undefined behaviour aborts). The
//! sanitized CMake builds set it (MCFX_SANITIZE), with a cargo target
//! directory of their own. Only the provider is instrumented: the shim and
//! the Rust code are not, so a Rust program that loads the instrumented
//! provider needs the sanitizer runtime preloaded (`LD_PRELOAD=$(g++
//! -print-file-name=libasan.so)`, or `libtsan.so`); a C++ program built with
//! the same `-fsanitize` loads it first anyway.

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::ffi::OsString;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=FLAGCX_HOME");
    println!("cargo:rerun-if-env-changed=FLAGCX_SW_SANITIZE");
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
    let mut args: Vec<OsString> = [
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
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.extend(sanitizer_flags().into_iter().map(OsString::from));
    args.extend([OsString::from("-I"), include.clone().into()]);
    args.extend(sources.iter().map(OsString::from));

    // The same compiler, flags and files make the same library: this
    // profile's other builds of flagcx-sys (with the test-support feature,
    // or for cargo check) copy the one already built instead of compiling
    // it again. The cache lives next to cargo's build directories
    // (target/<profile>/build/flagcx-sw-provider-<key>/).
    let cached = out.ancestors().nth(2).map(|build_dir| {
        let key = provider_key(compiler.path(), &args, manifest);
        build_dir.join(format!("flagcx-sw-provider-{key:016x}")).join("libflagcx.so")
    });
    let reused = cached.as_ref().is_some_and(|c| c.is_file() && fs::copy(c, &lib).is_ok());
    if !reused {
        let mut cmd = Command::new(compiler.path());
        cmd.args(&args).arg("-o").arg(&lib).arg("-ldl");
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", compiler.path().display()));
        assert!(status.success(), "building the software provider failed: {cmd:?}");
        if let Some(cached) = &cached {
            // Renamed into place: a concurrent build never copies half a file.
            let dir = cached.parent().unwrap();
            let tmp = dir.join(format!(".libflagcx.so.{}", std::process::id()));
            if fs::create_dir_all(dir).is_ok() && fs::copy(&lib, &tmp).is_ok() {
                let _ = fs::rename(&tmp, cached);
            }
        }
    }

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

/// A hash of everything the provider library depends on: the compiler (path
/// and version), its arguments, and every file of `provider/` (names and
/// bytes).
fn provider_key(compiler: &Path, args: &[OsString], manifest: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    compiler.hash(&mut h);
    if let Ok(v) = Command::new(compiler).arg("--version").output() {
        v.stdout.hash(&mut h);
    }
    args.hash(&mut h);
    for dir in ["provider/include", "provider/src"] {
        let mut files: Vec<PathBuf> = fs::read_dir(manifest.join(dir))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            f.hash(&mut h);
            fs::read(&f).unwrap_or_default().hash(&mut h);
        }
    }
    h.finish()
}

/// The provider's `-fsanitize` flags from `FLAGCX_SW_SANITIZE` (none when it
/// is unset or empty).
fn sanitizer_flags() -> Vec<String> {
    let value = env::var("FLAGCX_SW_SANITIZE").unwrap_or_default();
    let kinds: Vec<&str> = value.split(',').map(str::trim).filter(|k| !k.is_empty()).collect();
    if kinds.is_empty() {
        return Vec::new();
    }
    for k in &kinds {
        assert!(
            matches!(*k, "address" | "undefined" | "thread"),
            "FLAGCX_SW_SANITIZE={value}: {k:?} is not address, undefined or thread"
        );
    }
    assert!(
        !(kinds.contains(&"thread") && kinds.contains(&"address")),
        "FLAGCX_SW_SANITIZE={value}: thread and address cannot be combined"
    );
    let mut flags =
        vec![format!("-fsanitize={}", kinds.join(",")), "-fno-omit-frame-pointer".into()];
    if kinds.contains(&"undefined") {
        flags.push("-fno-sanitize-recover=undefined".into());
    }
    flags
}
