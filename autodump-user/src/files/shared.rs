//! What a reader makes of a file, kept once per file ([`FileId`]) for every process that maps
//! it: 300 workers of one interpreter or one Go binary are read once, not 300 times. The file is
//! mapped, not read: a reader touches the pages it needs.

use std::{collections::HashMap, path::Path, sync::Arc};

use super::identity::FileId;

/// Files kept at most; past it the cache starts again (a host runs a few interpreters and
/// binaries of each kind, not hundreds).
pub const MAX_FILES: usize = 64;

pub struct PerFile<T> {
    files: HashMap<FileId, Arc<T>>,
    /// Files read (a file read again after the cache started over counts again).
    pub reads: u64,
}

impl<T> Default for PerFile<T> {
    fn default() -> Self {
        Self { files: HashMap::new(), reads: 0 }
    }
}

impl<T> PerFile<T> {
    /// What `read` makes of the ELF file at `path`, read now unless a process mapping the same
    /// file was seen before; None when it cannot be opened or is not ELF.
    pub fn get(&mut self, path: &Path, read: impl FnOnce(&object::File<'_>, &[u8]) -> T) -> Option<Arc<T>> {
        let file = std::fs::File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        // SAFETY: read-only; files in use are replaced, not rewritten in place.
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let elf = object::File::parse(&*map).ok()?;
        let id = FileId::of(&elf, &meta);
        if let Some(known) = self.files.get(&id) {
            return Some(known.clone());
        }
        if self.files.len() >= MAX_FILES {
            self.files.clear();
        }
        self.reads += 1;
        let made = Arc::new(read(&elf, &map));
        self.files.insert(id, made.clone());
        Some(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary itself, reached by two paths (as two processes, one in another root,
    /// would reach it): read once.
    #[test]
    fn a_file_is_read_once_for_every_path_to_it() {
        let exe = std::fs::canonicalize("/proc/self/exe").unwrap();
        let mut files: PerFile<usize> = PerFile::default();
        let first = files.get(&exe, |_, data| data.len()).expect("an ELF file");
        let other = Path::new("/proc/self/root").join(exe.strip_prefix("/").unwrap());
        let again = files.get(&other, |_, _| panic!("read again")).expect("the same file");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!((files.reads, *first), (1, std::fs::metadata(&exe).unwrap().len() as usize));
    }
}
