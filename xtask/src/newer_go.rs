//! The newest Go in Debian unstable, for the tests that read a Go runtime from outside: Debian 12
//! ships Go 1.19, whose runtime layout is older than today's (the free-goroutine counts moved
//! from `gFree.n` to list sizes). The toolchain is fetched with apt from its own index, without
//! touching the system's sources or installed packages, and unpacked under
//! `target/go-toolchains/`. `target/go-toolchains/newest` points at its GOROOT.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{output, root, run, step};

/// Where the tests look for the toolchain (see tests/src/fixture.rs).
const NEWEST_LINK: &str = "target/go-toolchains/newest";
/// The suite it comes from; Go's static binaries run on Debian 12.
const SUITE: &str = "sid";

pub fn ensure() -> Result<()> {
    let dir = root().join("target/go-toolchains");
    let link = root().join(NEWEST_LINK);
    if output(Command::new(link.join("bin/go")).arg("version")).is_some() {
        return Ok(());
    }
    step("fetching the newest Go in Debian unstable for the Go runtime tests (about 50 MB, into target/go-toolchains)");
    let apt = crate::debian::Suite::open(&dir.join("apt"), SUITE)?;
    let names = apt.cache(&["search", "--names-only", r"^golang-1\.[0-9]+-go$"])?;
    let downloads = dir.join("downloads");
    // Newest first; the one below if the newest cannot be fetched (unstable in mid-upload).
    let mut fetched = None;
    for minor in minors_newest_first(&names).into_iter().take(2) {
        let version = format!("1.{minor}");
        let _ = std::fs::remove_dir_all(&downloads);
        std::fs::create_dir_all(&downloads)?;
        let packages = [format!("golang-{version}-go"), format!("golang-{version}-src")];
        match apt.download(&packages, &downloads) {
            Ok(()) => {
                fetched = Some(version);
                break;
            }
            Err(e) => step(&format!("cannot fetch Go {version} ({e:#}); trying the one before")),
        }
    }
    let version = fetched.context("no golang-1.NN-go package of Debian unstable could be fetched")?;
    let unpacked = dir.join("root");
    let _ = std::fs::remove_dir_all(&unpacked);
    for deb in std::fs::read_dir(&downloads)?.flatten() {
        run(Command::new("dpkg-deb").arg("-x").arg(deb.path()).arg(&unpacked))?;
    }
    let goroot = unpacked.join(format!("usr/lib/go-{version}"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&goroot, &link)?;
    // The index of unstable is about 60 MB unpacked; it is read again if ever needed.
    let _ = std::fs::remove_dir_all(&downloads);
    let _ = std::fs::remove_dir_all(dir.join("apt"));
    match output(Command::new(link.join("bin/go")).arg("version")) {
        Some(v) => step(&format!("newer Go ready: {}", v.trim())),
        None => bail!("the Go unpacked in {} does not run", goroot.display()),
    }
    Ok(())
}

/// The minor versions of the `golang-1.NN-go` lines of `apt-cache search`, highest first.
fn minors_newest_first(search: &str) -> Vec<u32> {
    let mut minors: Vec<u32> = search
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.strip_prefix("golang-1.")?.strip_suffix("-go")?.parse().ok())
        .collect();
    minors.sort_unstable_by(|a, b| b.cmp(a));
    minors
}

#[cfg(test)]
mod tests {
    #[test]
    fn orders_minor_versions_newest_first() {
        let search = "golang-1.26-go - Go programming language compiler\n\
                      golang-1.27-go - Go programming language compiler\n\
                      golang-1.9-go - old\ngolang-1.27-src - sources\n";
        assert_eq!(super::minors_newest_first(search), [27, 26, 9]);
        assert!(super::minors_newest_first("").is_empty());
    }
}
