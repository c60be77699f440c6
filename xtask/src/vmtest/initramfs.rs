//! The guest's whole file system, as one newc cpio archive that the kernel unpacks into its
//! root: our init, the agent, the test programs and fixtures at the same absolute paths as on
//! the host (the tests find the workspace by the path they were built in), and the shared
//! libraries they load, found with `ldd`.

use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Component, Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

enum Entry {
    Dir,
    File { host: PathBuf, mode: u32, mtime: u32 },
    Symlink(String),
    Bytes(Vec<u8>),
}

#[derive(Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// An empty directory (a mount point, say).
    pub fn dir(&mut self, guest: &str) {
        self.parents(Path::new(guest));
        self.entries.insert(guest.trim_start_matches('/').to_string(), Entry::Dir);
    }

    /// A file made here, at `guest`.
    pub fn bytes(&mut self, guest: &str, data: Vec<u8>) {
        self.parents(Path::new(guest));
        self.entries.insert(guest.trim_start_matches('/').to_string(), Entry::Bytes(data));
    }

    /// The host file `host` at `guest`, and the shared libraries it loads.
    pub fn file_as(&mut self, host: &Path, guest: &str) -> Result<()> {
        let meta = std::fs::metadata(host).with_context(|| format!("cannot add {}", host.display()))?;
        self.parents(Path::new(guest));
        let entry =
            Entry::File { host: host.to_path_buf(), mode: meta.permissions().mode(), mtime: meta.mtime() as u32 };
        self.entries.insert(guest.trim_start_matches('/').to_string(), entry);
        for library in shared_libraries(host) {
            self.host_path(&library)?;
        }
        Ok(())
    }

    /// A host file at the same path, with every symlink on the way (`/lib` -> `usr/lib`).
    pub fn host_path(&mut self, path: &Path) -> Result<()> {
        // Components still to walk, last first; a symlink's target is pushed in front of the rest.
        let owned = |p: &Path| -> Vec<std::ffi::OsString> {
            p.components()
                .rev()
                .filter_map(|c| match c {
                    Component::Normal(name) => Some(name.to_os_string()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                })
                .collect()
        };
        let mut at = PathBuf::from("/");
        let mut pending = owned(path);
        let mut hops = 0;
        while let Some(name) = pending.pop() {
            if name == ".." {
                at.pop();
                continue;
            }
            let next = at.join(&name);
            let meta = std::fs::symlink_metadata(&next).with_context(|| format!("cannot add {}", next.display()))?;
            let key = next.to_string_lossy().trim_start_matches('/').to_string();
            if meta.file_type().is_symlink() {
                hops += 1;
                anyhow::ensure!(hops < 40, "too many symlinks under {}", path.display());
                let target = std::fs::read_link(&next)?;
                self.entries.insert(key, Entry::Symlink(target.to_string_lossy().into_owned()));
                if target.is_absolute() {
                    at = PathBuf::from("/");
                }
                pending.extend(owned(&target));
            } else {
                let entry = if meta.is_dir() {
                    Entry::Dir
                } else {
                    Entry::File { host: next.clone(), mode: meta.permissions().mode(), mtime: meta.mtime() as u32 }
                };
                self.entries.entry(key).or_insert(entry);
                at = next;
            }
        }
        Ok(())
    }

    fn parents(&mut self, guest: &Path) {
        for parent in guest.ancestors().skip(1) {
            let key = parent.to_string_lossy().trim_start_matches('/').to_string();
            if !key.is_empty() {
                self.entries.entry(key).or_insert(Entry::Dir);
            }
        }
    }

    /// Writes the archive (uncompressed: the kernel unpacks it faster than it would inflate).
    pub fn write(&self, out: &Path) -> Result<u64> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
        for (ino, (name, entry)) in self.entries.iter().enumerate() {
            let builder = cpio::newc::Builder::new(name).ino(ino as u32 + 1).nlink(1);
            let (builder, data) = match entry {
                Entry::Dir => (builder.mode(0o040755).nlink(2), Vec::new()),
                Entry::Symlink(target) => (builder.mode(0o120777), target.clone().into_bytes()),
                Entry::Bytes(data) => (builder.mode(0o100755), data.clone()),
                Entry::File { host, mode, mtime } => (
                    builder.mode(0o100000 | (mode & 0o7777)).mtime(*mtime),
                    std::fs::read(host).with_context(|| format!("cannot read {}", host.display()))?,
                ),
            };
            let mut file = builder.write(&mut w, u32::try_from(data.len()).context("a file over 4 GiB")?);
            file.write_all(&data)?;
            file.finish()?;
        }
        cpio::newc::trailer(&mut w)?;
        w.flush()?;
        Ok(std::fs::metadata(out)?.len())
    }
}

/// Absolute paths of the shared libraries (and the loader) `binary` needs; none if static.
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let Ok(out) = Command::new("ldd").arg(binary).output() else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}
