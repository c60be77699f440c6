//! Names of every mapped file's addresses, kept once per file on the host ([`FileId`]), not per
//! process: a service of 300 processes mapping one glibc parses glibc's debug file once. Each
//! file has its own blazesym instance (its symbol table, DWARF or debug file), its Go table and
//! function starts when it needs them, and the names found so far by file offset. Files are
//! evicted least-recently-used when the agent is over its memory budget, and re-opened from a
//! process that maps them when needed again.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use blazesym::symbolize::{
    source::{Elf, Source},
    Input, Symbolized, Symbolizer as Blaze,
};

use super::location::{frames_of, grouped, unknown, Frame, Location};
use crate::{
    collect::{maps::Mapping, memory::heap_in_use},
    files::{debug_info, fde::FunctionStarts, identity::FileId, vdso::Vdso},
};

/// File offsets whose names one file keeps at most: a service that runs ever new code paths
/// (every PC of glibc, over days) does not grow the cache for ever.
const MAX_NAMES_PER_FILE: usize = 1 << 16;

/// What one file offset stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Named {
    /// Innermost first: inlined functions, then the function that holds it.
    Frames(Arc<[Frame]>),
    /// No symbol covers it; its function starts at this file offset (from `.eh_frame`).
    Grouped(u64, Arc<str>),
    /// No name and no function start; why.
    Unnamed(Arc<str>),
}

impl Named {
    /// The location of user address `address` in `mapping`, as named here.
    pub fn located(self, address: u64, mapping: Mapping) -> Location {
        match self {
            Named::Frames(frames) => Location { address, kernel: false, mapping: Some(mapping), frames, unnamed: None },
            Named::Grouped(start, why) => grouped(address, mapping, start, why),
            Named::Unnamed(why) => unknown(address, false, Some(mapping), why),
        }
    }
}

/// A file whose runtime names its code itself (a Go binary, from its own function table), read
/// once per file.
pub trait OwnNames {
    /// The frames at file offset `offset`, innermost first; None: not code it names (cgo's C).
    fn frames(&self, offset: u64) -> Option<Arc<[Frame]>>;
}

/// Opens the file at `path` (shown as `shown`) as one its runtime names, if it is one.
pub type FileReader = fn(path: &Path, shown: &str) -> Option<Arc<dyn OwnNames>>;

/// What the shared caches hold and what the budget took from them.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct FileCacheStats {
    /// Files whose names are cached now.
    pub files: usize,
    /// Heap the cached files took when they were read and named (estimated from the allocator).
    pub bytes: usize,
    /// Files parsed so far (a file parsed again after an eviction counts again).
    pub loads: u64,
    /// Files dropped to stay within the memory budget.
    pub evictions: u64,
}

pub struct SymbolFiles {
    debug_dirs: Vec<PathBuf>,
    /// Readers of files runtimes name themselves.
    readers: Vec<FileReader>,
    files: HashMap<FileId, FileNames>,
    /// The vDSO's symbols, from the agent's own copy (the same image in every process).
    vdso: Option<Vdso>,
    stats: FileCacheStats,
}

struct FileNames {
    /// Where it was opened (a process's view of it; the file stays open).
    path: PathBuf,
    blaze: Blaze,
    /// Its runtime's own names, when a runtime names its code (decided at open).
    own: Option<Arc<dyn OwnNames>>,
    /// Its separate debug file, when it has no symbols of its own (decided at open).
    debug: Option<debug_info::DebugFile>,
    /// Read the first time an address has no symbol.
    starts: Option<Option<FunctionStarts>>,
    why_unnamed: Option<Arc<str>>,
    names: HashMap<u64, Named>,
    /// Heap this entry took, from the allocator's count around its work.
    cost: usize,
    last_used: Instant,
}

impl SymbolFiles {
    /// Shared names, with separate debug files looked for in `debug_dirs` (`--debug-dir`), and
    /// files that runtimes name themselves opened by `readers`.
    pub fn new(debug_dirs: Vec<PathBuf>, readers: Vec<FileReader>) -> Self {
        Self { debug_dirs, readers, files: HashMap::new(), vdso: Vdso::own(), stats: FileCacheStats::default() }
    }

    pub fn vdso(&self) -> Option<&Vdso> {
        self.vdso.as_ref()
    }

    /// Names `offsets` of the file `id`, opened at `path` if it is not cached.
    pub fn name(&mut self, id: &FileId, path: &Path, shown: &str, offsets: &[u64]) -> Vec<Named> {
        let before = heap_in_use();
        if !self.files.contains_key(id) {
            let Some(entry) = FileNames::open(path, shown, &self.debug_dirs, &self.readers) else {
                let why: Arc<str> = "the file cannot be read".into();
                return offsets.iter().map(|_| Named::Unnamed(why.clone())).collect();
            };
            self.stats.loads += 1;
            self.files.insert(id.clone(), entry);
        }
        let entry = self.files.get_mut(id).expect("inserted");
        entry.last_used = Instant::now();
        let named = entry.name(offsets, &self.debug_dirs);
        let grew = heap_in_use().saturating_sub(before);
        entry.cost += grew;
        self.stats.bytes += grew;
        named
    }

    /// Whether a runtime names the addresses of `id` itself (a Go binary, from its own table).
    pub fn names_itself(&mut self, id: &FileId, path: &Path, shown: &str) -> bool {
        if !self.files.contains_key(id) {
            self.name(id, path, shown, &[]);
        }
        self.files.get(id).is_some_and(|f| f.own.is_some())
    }

    /// Drops the least recently used files until about `bytes` are freed, only files not named
    /// for `unused` (a file every interval needs would be read again at once); returns the
    /// estimate freed.
    pub fn evict(&mut self, bytes: usize, unused: Duration) -> usize {
        let mut by_age: Vec<(Instant, FileId)> = self
            .files
            .iter()
            .filter(|(_, f)| f.last_used.elapsed() >= unused)
            .map(|(id, f)| (f.last_used, id.clone()))
            .collect();
        by_age.sort_unstable_by_key(|(t, _)| *t);
        let mut freed = 0;
        for (_, id) in by_age {
            if freed >= bytes {
                break;
            }
            if let Some(f) = self.files.remove(&id) {
                tracing::debug!(file = %f.path.display(), cost_kib = f.cost / 1024, "file evicted from the symbol cache");
                freed += f.cost;
                self.stats.bytes = self.stats.bytes.saturating_sub(f.cost);
                self.stats.evictions += 1;
            }
        }
        freed
    }

    pub fn stats(&self) -> FileCacheStats {
        FileCacheStats { files: self.files.len(), ..self.stats.clone() }
    }
}

impl FileNames {
    fn open(path: &Path, shown: &str, debug_dirs: &[PathBuf], readers: &[FileReader]) -> Option<Self> {
        std::fs::metadata(path).ok()?;
        let own = readers.iter().find_map(|read| read(path, shown));
        let debug = if own.is_none() { debug_info::find_by_build_id(path, debug_dirs) } else { None };
        if let Some(found) = &debug {
            tracing::info!(file = shown, debug_file = %found.path.display(), "symbols from a separate debug file");
        }
        let blaze = Blaze::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            // The file stays open: the process that showed it may be gone when it is named.
            .enable_auto_reload(false)
            .set_debug_dirs(Some(debug_dirs))
            .build();
        Some(Self {
            path: path.to_path_buf(),
            blaze,
            own,
            debug,
            starts: None,
            why_unnamed: None,
            names: HashMap::new(),
            cost: 0,
            last_used: Instant::now(),
        })
    }

    /// Names `offsets`, each looked up once and kept (up to `MAX_NAMES_PER_FILE`, then afresh).
    fn name(&mut self, offsets: &[u64], debug_dirs: &[PathBuf]) -> Vec<Named> {
        let mut missing: Vec<u64> = offsets.iter().copied().filter(|o| !self.names.contains_key(o)).collect();
        missing.sort_unstable();
        missing.dedup();
        if self.names.len() + missing.len() > MAX_NAMES_PER_FILE {
            self.names = HashMap::new();
        }
        if !missing.is_empty() {
            self.look_up(&missing, debug_dirs);
        }
        offsets.iter().map(|o| self.names[o].clone()).collect()
    }

    fn look_up(&mut self, offsets: &[u64], debug_dirs: &[PathBuf]) {
        // Code its runtime names, from the runtime's own table; the rest (cgo's C, or a table
        // that cannot be read) from the ELF file's symbols.
        let mut rest = Vec::with_capacity(offsets.len());
        for &offset in offsets {
            match self.own.as_ref().and_then(|own| own.frames(offset)) {
                Some(frames) => drop(self.names.insert(offset, Named::Frames(frames))),
                None => rest.push(offset),
            }
        }
        if rest.is_empty() {
            return;
        }
        // A stripped file with a debug file by build-id is named from that file, by virtual
        // address (its file offsets are not the executable's).
        let vaddrs: Vec<u64>;
        let (elf, input) = match &self.debug {
            Some(debug) => {
                vaddrs = rest.iter().map(|&o| debug.virtual_address(o).unwrap_or(0)).collect();
                (Source::Elf(Elf::new(&debug.path)), Input::VirtOffset(&vaddrs[..]))
            }
            None => (Source::Elf(Elf::new(&self.path)), Input::FileOffset(&rest[..])),
        };
        let results = self.blaze.symbolize(&elf, input).unwrap_or_default();
        let found: Vec<Option<Arc<[Frame]>>> = (0..rest.len())
            .map(|i| match results.get(i) {
                Some(Symbolized::Sym(sym)) => Some(frames_of(sym)),
                _ => None,
            })
            .collect();
        drop(results);
        for (offset, frames) in rest.into_iter().zip(found) {
            // No symbol: one name per function, from the unwind table's function start.
            let named = match frames {
                Some(frames) => Named::Frames(frames),
                None => {
                    let why = self.why_unnamed(debug_dirs);
                    match self.function_starts().and_then(|f| f.start_of(offset)) {
                        Some(start) => Named::Grouped(start, why),
                        None => Named::Unnamed(why),
                    }
                }
            };
            self.names.insert(offset, named);
        }
    }

    fn function_starts(&mut self) -> Option<&FunctionStarts> {
        let path = &self.path;
        self.starts
            .get_or_insert_with(|| {
                let starts = FunctionStarts::open(path);
                if let Some(s) = &starts {
                    tracing::info!(file = %path.display(), functions = s.len(), "no symbols: functions told apart by .eh_frame");
                }
                starts
            })
            .as_ref()
    }

    /// Why the file leaves addresses unnamed: no symbol table and no debug file, or symbols that
    /// do not cover them.
    fn why_unnamed(&mut self, debug_dirs: &[PathBuf]) -> Arc<str> {
        let path = &self.path;
        self.why_unnamed
            .get_or_insert_with(|| match debug_info::inspect(path) {
                Some(info) if info.symbols => "no symbol covers these addresses".into(),
                Some(info) => format!(
                    "stripped (no symbol table or DWARF), and no debug file{} in {}",
                    if info.build_id { " by build-id or debug link" } else { " by debug link" },
                    debug_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                )
                .into(),
                None => "the file cannot be read".into(),
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_once_and_evicted_least_recently_used() {
        let mut files = SymbolFiles::new(Vec::new(), Vec::new());
        let (a, b) = (Path::new("/bin/sh"), std::env::current_exe().unwrap());
        let (id_a, id_b) = (FileId::of_path(a).unwrap(), FileId::of_path(&b).unwrap());
        files.name(&id_a, a, "sh", &[0x10]);
        std::thread::sleep(Duration::from_millis(600));
        files.name(&id_b, &b, "test", &[0x10]);
        // Named again from the cache, through another path to the same file: not loaded again.
        files.name(&id_b, Path::new(&format!("/proc/self/root{}", b.display())), "test", &[0x10, 0x20]);
        assert_eq!(files.stats().loads, 2);
        // Only what was not named for a while may go.
        files.evict(usize::MAX, Duration::from_millis(500));
        let stats = files.stats();
        assert_eq!((stats.files, stats.evictions), (1, 1), "{stats:?}");
        files.name(&id_a, a, "sh", &[0x10]);
        assert_eq!(files.stats().loads, 3, "an evicted file is read again when needed");
        assert_eq!(files.evict(usize::MAX, Duration::from_secs(60)), 0, "nothing unused for a minute");
    }
}
