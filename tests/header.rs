//! The committed C header is what cbindgen generates from this source (the
//! build writes it to OUT_DIR; `scripts/header.sh` copies it to include/),
//! it compiles alone as C11 and C++17, and the README's C example (examples/c/readme_example.c, quoted verbatim in README.md)
//! builds against the cdylib and runs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_committed_header_is_the_generated_one() {
    let generated = std::fs::read_to_string(env!("MCFX_GENERATED_HEADER")).unwrap();
    let committed = std::fs::read_to_string(root().join("include/mooncake_flagcx.h")).unwrap();
    assert!(
        generated == committed,
        "include/mooncake_flagcx.h is out of date: run scripts/header.sh and commit it"
    );
}

/// target/<profile>/, where cargo puts the cdylib and libflagcx.so.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The directory of the cdylib this test run built. `cargo test` compiles the
/// library once with all its crate types, the cdylib included, into
/// target/<profile>/deps/ (the directory of this test binary), and rebuilds it
/// whenever the library changes; only `cargo build` copies it up to
/// target/<profile>/. So deps/ comes first: it is never stale and exists on a
/// fresh clone after `cargo test` alone. target/<profile>/ is the fallback for
/// a test binary run some other way.
fn cdylib_dir() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let dirs = [deps, profile_dir()];
    let found = dirs.iter().find(|d| d.join("libmooncake_flagcx.so").is_file());
    found.unwrap_or_else(|| panic!("no libmooncake_flagcx.so in {dirs:?}: run cargo build")).clone()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// A directory of its own under the temp dir, removed when dropped, whether
/// the test passed or panicked. `name` keeps the tests of one process (one
/// PID) apart: they run at once.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("mcfx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn compile_header_alone(compiler: &str, std: &str, ext: &str) {
    let dir = TempDir::new(&format!("header-{ext}"));
    let src = dir.path().join(format!("only_header.{ext}"));
    std::fs::write(&src, "#include \"mooncake_flagcx.h\"\nint main(void) { return MCFX_OK; }\n")
        .unwrap();
    run(Command::new(compiler)
        .arg(format!("-std={std}"))
        .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only", "-I"])
        .arg(root().join("include"))
        .arg(&src));
}

#[test]
fn header_compiles_alone_as_c11() {
    compile_header_alone("cc", "c11", "c");
}

#[test]
fn header_compiles_alone_as_cxx17() {
    compile_header_alone("c++", "c++17", "cpp");
}

#[test]
fn readme_quotes_the_c_example_verbatim() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let example = std::fs::read_to_string(root().join("examples/c/readme_example.c")).unwrap();
    assert!(
        readme.contains(example.trim_end()),
        "README.md must quote examples/c/readme_example.c"
    );
}

#[test]
fn readme_c_example_builds_and_runs() {
    // The program records the SONAME, libmooncake_flagcx.so.1; cargo names
    // its output libmooncake_flagcx.so and makes no .so.1 link in deps/. A
    // private directory holds that link to the cdylib this test run built,
    // so the program runs against it and not a stale copy elsewhere (its
    // libflagcx.so, which the cdylib finds through its $ORIGIN rpath, is
    // linked in beside it).
    let cdylib = cdylib_dir().join("libmooncake_flagcx.so");
    let tmp = TempDir::new("readme-example");
    let lib_dir = tmp.path().join("lib");
    std::fs::create_dir_all(&lib_dir).unwrap();
    for name in ["libmooncake_flagcx.so", "libmooncake_flagcx.so.1"] {
        std::os::unix::fs::symlink(&cdylib, lib_dir.join(name)).unwrap();
    }
    let flagcx = profile_dir().join("libflagcx.so");
    std::os::unix::fs::symlink(flagcx, lib_dir.join("libflagcx.so")).unwrap();
    let exe = tmp.path().join("readme_example");
    run(Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root().join("include"))
        .arg(root().join("examples/c/readme_example.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib_dir.display()))
        .arg("-lmooncake_flagcx")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display())));
    let out = run(&mut Command::new(&exe));
    assert!(out.contains("write: success, data intact"), "{out}");
}
