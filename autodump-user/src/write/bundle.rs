//! Writes a bundle atomically: every file goes into a hidden temporary directory beside the
//! destination, is synced, and the directory is renamed into place. A reader never sees a
//! partial bundle, and a failure leaves nothing behind.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot create output directory {path}: {source}")]
    CreateOut { path: PathBuf, source: io::Error },
    #[error("output directory {path} is not writable: {source}")]
    NotWritable { path: PathBuf, source: io::Error },
    #[error("cannot write bundle {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Bundles reveal code structure: only the owner (root) may read them.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Creates `out` if needed and proves it writable, so a bad `--out` fails before recording.
pub fn prepare_out_dir(out: &Path) -> Result<(), BundleError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(out)
        .map_err(|source| BundleError::CreateOut { path: out.to_path_buf(), source })?;
    let probe = out.join(format!(".autodump-write-test-{}", std::process::id()));
    let result = File::create(&probe).and_then(|mut f| f.write_all(b"ok"));
    let _ = fs::remove_file(&probe);
    result.map_err(|source| BundleError::NotWritable { path: out.to_path_buf(), source })
}

/// A bundle being written: each file goes into a hidden directory beside the destination as
/// soon as it is rendered (nothing is held whole in memory for the end), and `commit` renames
/// the directory into place. Dropped without a commit, it leaves nothing behind.
pub struct StagedBundle {
    out: PathBuf,
    name: String,
    tmp: PathBuf,
    committed: bool,
}

/// Why a file could not be written: its renderer failed (the file system was fine), or the
/// file system did.
#[derive(Debug)]
pub enum FileError {
    Render(io::Error),
    Bundle(BundleError),
}

impl StagedBundle {
    /// Starts the bundle `out/name` (a free name is chosen at commit).
    pub fn create(out: &Path, name: &str) -> Result<Self, BundleError> {
        prepare_out_dir(out)?;
        let tmp = out.join(format!(".tmp-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::DirBuilder::new()
            .mode(DIR_MODE)
            .create(&tmp)
            .map_err(|source| BundleError::Write { path: out.join(name), source })?;
        Ok(Self { out: out.to_path_buf(), name: name.to_string(), tmp, committed: false })
    }

    /// Writes `file` with `render`, buffered and synced. A fresh file, never one that exists or
    /// a symlink planted in its place.
    pub fn file(&self, file: &str, render: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<(), FileError> {
        let fs_err = |source| FileError::Bundle(self.error(source));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.tmp.join(file))
            .map_err(fs_err)?;
        let mut w = Tracked { inner: io::BufWriter::with_capacity(64 << 10, f), failed: None };
        match render(&mut w) {
            Ok(()) => {}
            Err(e) => {
                return Err(match w.failed.take() {
                    Some(source) => fs_err(source),
                    None => FileError::Render(e),
                })
            }
        }
        let f = w.inner.into_inner().map_err(|e| fs_err(e.into_error()))?;
        f.sync_all().map_err(fs_err)
    }

    /// Writes `file` whole, replacing what a failed render left of it.
    pub fn bytes(&self, file: &str, bytes: &[u8]) -> Result<(), BundleError> {
        let _ = fs::remove_file(self.tmp.join(file));
        self.file(file, |w| w.write_all(bytes)).map_err(|e| match e {
            FileError::Bundle(e) => e,
            FileError::Render(source) => self.error(source),
        })
    }

    /// Renames the finished bundle into place; returns its path.
    pub fn commit(mut self) -> Result<PathBuf, BundleError> {
        let result = (|| {
            File::open(&self.tmp)?.sync_all()?;
            let dest = free_name(&self.out, &self.name);
            // rename(2) refuses to replace a non-empty directory, so a racing writer cannot clobber.
            fs::rename(&self.tmp, &dest)?;
            File::open(&self.out)?.sync_all()?;
            Ok(dest)
        })();
        self.committed = result.is_ok();
        result.map_err(|source| self.error(source))
    }

    fn error(&self, source: io::Error) -> BundleError {
        BundleError::Write { path: self.out.join(&self.name), source }
    }
}

impl Drop for StagedBundle {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// A writer that remembers the first error of the file under it, to tell a renderer's failure
/// from the file system's.
struct Tracked<W> {
    inner: W,
    failed: Option<io::Error>,
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| self.note(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|e| self.note(e))
    }
}

impl<W> Tracked<W> {
    fn note(&mut self, e: &io::Error) {
        if self.failed.is_none() {
            self.failed = Some(io::Error::new(e.kind(), e.to_string()));
        }
    }
}

/// Writes `files` as the bundle `out/name` and returns its path. If that name is taken, a
/// numeric suffix is added; an existing bundle is never touched.
pub fn write_bundle<N: AsRef<str>>(out: &Path, name: &str, files: &[(N, Vec<u8>)]) -> Result<PathBuf, BundleError> {
    let bundle = StagedBundle::create(out, name)?;
    for (file, bytes) in files {
        bundle.bytes(file.as_ref(), bytes)?;
    }
    bundle.commit()
}

fn free_name(out: &Path, name: &str) -> PathBuf {
    let first = out.join(name);
    if !first.exists() {
        return first;
    }
    (2..).map(|n| out.join(format!("{name}-{n}"))).find(|p| !p.exists()).expect("unbounded range")
}

/// `<comm>-<pid>-<UTC YYYYmmddTHHMMSSZ>-<reason>`, with the comm made safe for a file name.
pub fn bundle_name(comm: &str, pid: u32, unix_secs: u64, reason: &str) -> String {
    let comm: String =
        comm.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    let comm = comm.trim_start_matches('.');
    let comm = if comm.is_empty() { "process" } else { comm };
    format!("{comm}-{pid}-{}-{reason}", super::time::compact_utc(unix_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("autodump-bundle-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn writes_atomically_and_never_overwrites() {
        let out = scratch("atomic");
        let first = write_bundle(&out, "app-1-x-record", &[("a.txt", b"one".to_vec())]).unwrap();
        let second = write_bundle(&out, "app-1-x-record", &[("a.txt", b"two".to_vec())]).unwrap();
        assert_eq!(first, out.join("app-1-x-record"));
        assert_eq!(second, out.join("app-1-x-record-2"));
        assert_eq!(fs::read(first.join("a.txt")).unwrap(), b"one");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&first).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(first.join("a.txt")).unwrap().permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "no temporary directory may remain");
        fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let out = scratch("fail");
        let result = write_bundle(&out, "b", &[("no/such/dir.txt", vec![1])]);
        assert!(matches!(result, Err(BundleError::Write { .. })));
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
        fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn unusable_out_dir_is_reported() {
        assert!(matches!(prepare_out_dir(Path::new("/proc/self/no-such")), Err(BundleError::CreateOut { .. })));
    }

    #[test]
    fn names_are_safe() {
        assert_eq!(bundle_name("my app/1", 42, 0, "record"), "my_app_1-42-19700101T000000Z-record");
        assert_eq!(bundle_name("..", 1, 0, "record"), "process-1-19700101T000000Z-record");
    }
}
