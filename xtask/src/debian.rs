//! apt with an index of our own for one Debian suite, so that packages of other releases (a
//! newer Go, other releases' kernels) can be fetched into `target/` without touching the
//! system's sources, lists or installed packages.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::util::{output, run};

/// apt's state for one suite, under a directory of ours.
pub struct Suite {
    options: Vec<String>,
}

impl Suite {
    /// Creates (or reuses) apt's state for `suite` under `dir` and reads the suite's index.
    pub fn open(dir: &Path, suite: &str) -> Result<Self> {
        let lists: PathBuf = dir.join("lists");
        let cache = dir.join("cache");
        std::fs::create_dir_all(lists.join("partial"))?;
        std::fs::create_dir_all(cache.join("archives/partial"))?;
        let sources = dir.join("sources.list");
        std::fs::write(
            &sources,
            format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {suite} main\n"
            ),
        )?;
        let options = [
            format!("Dir::Etc::SourceList={}", sources.display()),
            "Dir::Etc::SourceParts=/dev/null".into(),
            format!("Dir::State::Lists={}", lists.display()),
            format!("Dir::Cache={}", cache.display()),
            "Acquire::Languages=none".into(),
            // Downloads land in our own directory, which apt's unprivileged user cannot write.
            "APT::Sandbox::User=root".into(),
        ];
        let apt = Self { options: options.into_iter().flat_map(|o| ["-o".to_string(), o]).collect() };
        run(apt.command("apt-get").args(["update", "-qq"]))
            .with_context(|| format!("cannot read Debian {suite}'s package index (needs deb.debian.org)"))?;
        Ok(apt)
    }

    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(&self.options);
        cmd
    }

    /// `apt-cache` output for `args`, or an error naming what was asked.
    pub fn cache(&self, args: &[&str]) -> Result<String> {
        output(self.command("apt-cache").args(args)).with_context(|| format!("apt-cache {args:?} failed"))
    }

    /// Downloads `packages` (.deb files) into `dir`.
    pub fn download(&self, packages: &[String], dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        run(self.command("apt-get").args(["download", "-qq"]).args(packages).current_dir(dir))
    }
}

/// The package names in the first `Depends:` line of `apt-cache show` output, without versions
/// or alternatives after the first.
pub fn depends(show: &str) -> Vec<String> {
    let Some(line) = show.lines().find_map(|l| l.strip_prefix("Depends:")) else { return Vec::new() };
    line.split(',').filter_map(|dep| dep.split('|').next()?.split_whitespace().next().map(str::to_string)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_first_depends_line() {
        let show = "Package: linux-image-amd64\nVersion: 7.2.13-1\n\
                    Depends: dracut | initramfs-tools (>= 0.120), linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1)\n\
                    Depends: ignored\n";
        assert_eq!(super::depends(show), ["dracut", "linux-binary-7.2.13+deb14-amd64"]);
        assert!(super::depends("Package: x\n").is_empty());
    }
}
