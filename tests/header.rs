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
    let lib_dir = profile_dir();
    assert!(
        lib_dir.join("libmooncake_flagcx.so").is_file(),
        "{} has no libmooncake_flagcx.so (cargo test does not build the cdylib: run cargo build first, as scripts/test.sh does)",
        lib_dir.display()
    );
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
