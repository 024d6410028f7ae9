//! The generated C header compiles alone as C11 and C++17, and the README's
//! C example (examples/c/readme_example.c, quoted verbatim in README.md)
//! builds against the cdylib and runs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

fn compile_header_alone(compiler: &str, std: &str, ext: &str) {
    let dir = std::env::temp_dir().join(format!("mcfx-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("only_header.{ext}"));
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
    let lib_dir = cdylib_dir();
    let exe = std::env::temp_dir().join(format!("mcfx-readme-example-{}", std::process::id()));
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
    let _ = std::fs::remove_file(Path::new(&exe));
}
