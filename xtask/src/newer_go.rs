//! Newer Gos than Debian 12's 1.19, for the tests that read a Go runtime from outside: the
//! newest in Debian unstable (`target/go-toolchains/newest`), whose runtime layout is today's
//! (the free-goroutine counts moved from `gFree.n` to list sizes), and the newest in Debian 13
//! (`target/go-toolchains/middle`), one between them. Each is fetched with apt from its own
//! index, without touching the system's sources or installed packages, and unpacked under
//! `target/go-toolchains/`; the link points at its GOROOT.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{output, root, run, step};

/// (link under target/go-toolchains that the tests look for, suite it comes from); Go's static
/// binaries run on Debian 12.
const TOOLCHAINS: &[(&str, &str)] = &[("newest", "sid"), ("middle", "trixie")];

pub fn ensure() -> Result<()> {
    for (name, suite) in TOOLCHAINS {
        fetch(name, suite)?;
    }
    Ok(())
}

fn fetch(name: &str, suite: &str) -> Result<()> {
    let dir = root().join("target/go-toolchains");
    let link = dir.join(name);
    if output(Command::new(link.join("bin/go")).arg("version")).is_some() {
        return Ok(());
    }
    step(&format!(
        "fetching the newest Go in Debian {suite} for the Go runtime tests (about 50 MB, into {})",
        link.display()
    ));
    let apt = crate::debian::Suite::open(&dir.join("apt"), suite)?;
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
    let version = fetched.with_context(|| format!("no golang-1.NN-go package of Debian {suite} could be fetched"))?;
    let unpacked = dir.join(format!("root-{name}"));
    let _ = std::fs::remove_dir_all(&unpacked);
    for deb in std::fs::read_dir(&downloads)?.flatten() {
        run(Command::new("dpkg-deb").arg("-x").arg(deb.path()).arg(&unpacked))?;
    }
    let goroot = unpacked.join(format!("usr/lib/go-{version}"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&goroot, &link)?;
    // A suite's index is about 60 MB unpacked; it is read again if ever needed.
    let _ = std::fs::remove_dir_all(&downloads);
    let _ = std::fs::remove_dir_all(dir.join("apt"));
    match output(Command::new(link.join("bin/go")).arg("version")) {
        Some(v) => step(&format!("{name} Go ready: {}", v.trim())),
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
