//! Interpreters to run fixtures on: the host's own, or one in a root filesystem of its own
//! Debian release (it needs that release's libc), run with `chroot` as a container would run it.
//! `cargo xtask setup` makes the roots (`target/python-roots/SUITE`: Python and Ruby).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::workspace;

/// Debian releases whose interpreters `cargo xtask setup` unpacks into roots of their own:
/// trixie's (CPython 3.13, CRuby 3.3) and unstable's newest (3.14; 3.4 from experimental).
pub const ROOT_SUITES: &[&str] = &["trixie", "sid"];

/// Where the fixtures are copied in a root.
const FIXTURES_IN_ROOT: &str = "opt/autodump-fixtures";

/// The root `cargo xtask setup` makes for `suite`.
pub fn root(suite: &str) -> PathBuf {
    workspace().join("target/python-roots").join(suite)
}

#[derive(Clone, Debug)]
pub struct Interpreter {
    pub root: Option<PathBuf>,
    /// The interpreter, as a process in its root sees it.
    pub exe: PathBuf,
}

impl Interpreter {
    pub fn host(exe: impl Into<PathBuf>) -> Self {
        Self { root: None, exe: exe.into() }
    }

    pub fn in_root(root: PathBuf, exe: impl Into<PathBuf>) -> Self {
        Self { root: Some(root), exe: exe.into() }
    }

    /// A command that runs this interpreter (in its root, when it has one).
    pub fn command(&self) -> Command {
        match &self.root {
            Some(root) => {
                let mut command = Command::new("chroot");
                command.arg(root).arg(&self.exe);
                command
            }
            None => Command::new(&self.exe),
        }
    }

    /// Where a file this interpreter sees at `path` (absolute) is on the host.
    pub fn on_host(&self, path: &Path) -> PathBuf {
        match &self.root {
            Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_path_buf(),
        }
    }

    /// The path of fixture `name` (under `tests/fixtures/LANGUAGE`, `python` or `ruby` by the
    /// interpreter's name) as this interpreter sees it (copied into its root first).
    pub fn fixture(&self, name: &str) -> PathBuf {
        let exe = self.exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let language = if exe.starts_with("ruby") { "ruby" } else { "python" };
        let here = workspace().join("tests/fixtures").join(language).join(name);
        let Some(root) = &self.root else { return here };
        let dir = root.join(FIXTURES_IN_ROOT);
        std::fs::create_dir_all(&dir).expect("a fixture directory in the root");
        // Copied whole, then renamed: a test running at once may be reading the last copy.
        let part = dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::copy(&here, &part).expect("copy the fixture into the root");
        std::fs::rename(&part, dir.join(name)).expect("rename the fixture's copy");
        Path::new("/").join(FIXTURES_IN_ROOT).join(name)
    }
}

impl std::fmt::Display for Interpreter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.root {
            Some(root) => write!(f, "{} in {}", self.exe.display(), root.display()),
            None => write!(f, "{}", self.exe.display()),
        }
    }
}
