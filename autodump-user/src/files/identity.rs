//! What a mapped file is, whatever path or process it is reached through: its build id, else its
//! (device, inode, size, mtime). Everything parsed from a file (unwind rows, symbols, Go tables,
//! debug files) is kept once per identity, for every process that maps it.

use std::{
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use object::Object;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileId(Box<[u8]>);

impl FileId {
    /// The identity of an ELF file: its build id, else where and what it is on disk.
    pub fn of<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>, meta: &std::fs::Metadata) -> Self {
        match elf.build_id().ok().flatten() {
            Some(id) => Self(id.into()),
            None => Self::of_metadata(meta),
        }
    }

    /// A file without a build id (or not ELF): (device, inode, size, mtime).
    pub fn of_metadata(meta: &std::fs::Metadata) -> Self {
        let fields = [meta.dev(), meta.ino(), meta.size(), meta.mtime() as u64];
        Self(fields.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// The identity of the file at `path`.
    pub fn of_path(path: &Path) -> Option<Self> {
        let file = File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        let cache = object::ReadCache::new(file);
        Some(match object::File::parse(&cache) {
            Ok(elf) => Self::of(&elf, &meta),
            Err(_) => Self::of_metadata(&meta),
        })
    }

    /// A key that sorts and prints: the build id or the metadata, in hex.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Where the file process `pid` maps at [`start`, `end`) from `path` can be opened: its own view
/// of it (a container's root, a file deleted since it was mapped) while it lives, else the path.
pub fn open_path(pid: u32, start: u64, end: u64, path: &str) -> PathBuf {
    // map_files needs CAP_SYS_ADMIN; the root link only CAP_SYS_PTRACE.
    let map_file = PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"));
    if File::open(&map_file).is_ok() {
        return map_file;
    }
    let rooted = PathBuf::from(format!("/proc/{pid}/root{path}"));
    if rooted.exists() {
        rooted
    } else {
        PathBuf::from(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_one_identity_whatever_the_path() {
        let exe = std::env::current_exe().unwrap();
        let direct = FileId::of_path(&exe).unwrap();
        let through_proc = FileId::of_path(&PathBuf::from(format!("/proc/self/root{}", exe.display()))).unwrap();
        assert_eq!(direct, through_proc);
        assert_ne!(FileId::of_path(Path::new("/proc/self/exe")), FileId::of_path(Path::new("/bin/sh")));
        assert!(FileId::of_path(Path::new("/no/such/file")).is_none());
    }
}
