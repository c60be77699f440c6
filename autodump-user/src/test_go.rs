//! Test helper: the Go fixtures built with each Go toolchain the tests can get (Debian 12's, and
//! the newest in Debian unstable that `cargo xtask setup` unpacks), unstripped and stripped.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// `tests/fixtures/NAME.go` built with `go` (GOROOT `goroot` when given), unstripped and
/// with `-ldflags=-s -w`; None (with a note) when no Go toolchain is installed.
pub fn build(name: &str, goroot: Option<&Path>) -> Option<(PathBuf, PathBuf)> {
    build_with(name, goroot, &[])
}

/// As [`build`], with more `go build` arguments (`-buildmode=pie`) and a suffix for them.
pub fn build_with(name: &str, goroot: Option<&Path>, extra: &[&str]) -> Option<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let go = goroot.map_or(PathBuf::from("go"), |g| g.join("bin/go"));
    let tag = goroot.and_then(|g| g.file_name()).map_or("system".into(), |n| n.to_string_lossy().into_owned());
    let out = root.join("target/unit-go").join(&tag);
    std::fs::create_dir_all(&out).ok()?;
    let mut built = Vec::new();
    for (suffix, flags) in [("", ""), ("-stripped", "-s -w")] {
        let bin = out.join(format!("{name}{}{suffix}", extra.concat()));
        let mut cmd = Command::new(&go);
        cmd.args(["build", "-o"]).arg(&bin).arg(format!("-ldflags={flags}")).args(extra);
        cmd.arg(root.join(format!("tests/fixtures/{name}.go")));
        // Go's own build cache, shared by every checkout (its keys hold the toolchain), one in
        // target/ when there is no home.
        if std::env::var_os("HOME").is_none() {
            cmd.env("GOCACHE", out.join("cache"));
        }
        cmd.env("GO111MODULE", "off").env("GOTOOLCHAIN", "local");
        if let Some(g) = goroot {
            cmd.env("GOROOT", g);
        }
        match cmd.output() {
            Ok(o) if o.status.success() => built.push(bin),
            other => {
                skip(&format!("cannot build {name} with {}: {other:?}", go.display()));
                return None;
            }
        }
    }
    Some((built[0].clone(), built[1].clone()))
}

/// Debian 12's Go (None), and the newer ones `cargo xtask setup` unpacks that are there.
pub fn toolchains() -> Vec<Option<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go-toolchains");
    let mut all = vec![None];
    for name in ["middle", "newest"] {
        if dir.join(name).join("bin/go").exists() {
            all.push(Some(dir.join(name)));
        } else {
            skip(&format!("no {name} Go in {} (`cargo xtask setup` fetches it)", dir.display()));
        }
    }
    all
}

/// Says why a part of a test is left out, or fails under `AUTODUMP_REQUIRE_BPF=1` (CI), where
/// every tool the tests need is installed by setup.
pub fn skip(why: &str) {
    assert!(
        std::env::var("AUTODUMP_REQUIRE_BPF").as_deref() != Ok("1"),
        "{why}, and AUTODUMP_REQUIRE_BPF=1 forbids skipping"
    );
    eprintln!("skipped: {why}");
}
