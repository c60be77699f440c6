//! The unwind tables in the kernel: every mapped file's rows, compiled once per file (keyed by
//! build id, so that processes and restarts mapping one file share them), appended to one BPF
//! array the agent writes through mmap, and each target process's executable mappings with
//! the row range of their file.
//!
//! Rows are compiled in the agent, at attach for what is mapped then and at a tick for what is
//! mapped later (dlopen), never on the probes' path. The array is sized at load from what the
//! target maps, with room for more, and never beyond `--unwind-table-rows`; a file that does
//! not fit is walked by frame pointer, and the summary says so.

use std::{collections::HashMap, fs::File, path::PathBuf, sync::Arc, time::Instant};

use autodump_common::unwind::{MappingEntry, UnwindRow, JIT_CODE, MAX_MAPPINGS};
use aya::maps::MapData;
use object::Object;
use serde::Serialize;

use super::slots::{MappingSlots, SlotError};
use super::{
    code_rows::{CodeRowBlocks, CodeRows},
    row_store::RowStore,
    rows::{self, Compiled},
};
use crate::{collect::maps::MemoryMap, files::vdso, probes::MappingMaps};

/// Rows of headroom the array gets beyond what the target maps at attach (libraries it
/// loads later).
const HEADROOM_ROWS: u32 = 1 << 16;
/// Rows of headroom more when a target runs code no file backs (a JIT, whose runtime may give
/// rows for its code): 4 MiB, a block pair for a JVM of some 50,000 compiled methods.
const CODE_HEADROOM_ROWS: u32 = 1 << 18;

/// What the summary says about the tables.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableStats {
    /// Files with rows in the kernel.
    pub files: usize,
    pub rows: u64,
    /// Kernel memory of the row array as sized at load (16 bytes a row) and of the mapping table.
    pub kernel_bytes: u64,
    pub capacity_rows: u64,
    /// Bytes of CFI compiled, and the time it took.
    pub cfi_bytes: u64,
    pub build_ms: f64,
    /// Entries that could not be parsed (their code is walked by frame pointer).
    pub bad_entries: u64,
    /// Files walked by frame pointer only, and why (no CFI, garbage, the cap).
    pub frame_pointer_files: Vec<FileNote>,
    /// The row cap was reached: some files are walked by frame pointer.
    pub cap_reached: bool,
    /// Rows a runtime gave for code no file backs (a JIT's code cache), in the kernel now.
    pub code_rows: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FileNote {
    pub path: String,
    pub why: String,
}

/// Identity of a file's contents: its build id, else (device, inode, size, mtime).
type FileKey = Vec<u8>;

enum FileRows {
    /// Compiled before the array existed; written at `attach`.
    Pending(Vec<UnwindRow>),
    Stored {
        start: u32,
        count: u32,
    },
    /// No rows: walked by frame pointer.
    None,
}

struct FileEntry {
    rows: FileRows,
    /// (virtual address, file offset, size) of its loaded segments.
    segments: crate::files::segments::Segments,
}

/// One process's mappings: (path, start) to their file's key, None if not a readable ELF file.
type ProcessFiles = HashMap<(Arc<str>, u64), Option<FileKey>>;

pub struct UnwindTables {
    cap_rows: u32,
    /// Each process's mapping table in the kernel.
    slots: MappingSlots,
    files: HashMap<FileKey, FileEntry>,
    /// Per process, the file key of each of its mappings, by (path, mapping start); None: not
    /// a readable ELF file. Kept only for the mappings the process has now.
    mapped: HashMap<u32, ProcessFiles>,
    store: Option<RowStore>,
    code: CodeRowBlocks,
    stats: TableStats,
}

impl UnwindTables {
    /// Tables of at most `cap_rows` rows, for up to `processes` processes at once.
    pub fn new(cap_rows: u32, processes: u32) -> Self {
        Self {
            cap_rows,
            slots: MappingSlots::new(processes),
            files: HashMap::new(),
            mapped: HashMap::new(),
            store: None,
            code: CodeRowBlocks::default(),
            stats: TableStats::default(),
        }
    }

    /// Compiles the rows of every file `pids` map now; returns the array size to load with.
    pub fn prepare(&mut self, pids: &[u32]) -> u32 {
        let mut jit = false;
        for &pid in pids {
            if let Ok(map) = MemoryMap::read(pid) {
                self.scan(pid, &map);
                jit |= map.mappings().any(|m| m.is_anonymous());
            }
        }
        let needed: u64 = self.files.values().map(|f| rows_of(&f.rows)).sum();
        let headroom = HEADROOM_ROWS + if jit { CODE_HEADROOM_ROWS } else { 0 };
        let capacity = (needed + u64::from(headroom)).min(u64::from(self.cap_rows)).max(1) as u32;
        self.stats.capacity_rows = u64::from(capacity);
        capacity
    }

    /// Takes the probes' maps and writes the prepared rows into them; processes' mappings are
    /// written as each is watched (`refresh`).
    pub fn attach(&mut self, rows: MapData, maps: MappingMaps) -> std::io::Result<()> {
        let store = RowStore::map(rows, self.stats.capacity_rows as u32)?;
        self.stats.kernel_bytes = (store.bytes + self.slots.kernel_bytes()) as u64;
        self.store = Some(store);
        self.slots.attach(maps);
        self.flush_pending();
        Ok(())
    }

    /// Frees the mapping slots of a process no longer watched (its files' rows stay: the next
    /// instance of a restarted service maps the same files).
    pub fn forget(&mut self, pid: u32) {
        self.mapped.remove(&pid);
        self.stats.code_rows -= u64::from(self.code.forget(pid));
        self.slots.forget(pid);
    }

    /// Learns the files in `map` (`pid`'s, as read now) not seen before, and rewrites its
    /// mapping table if it changed.
    pub fn refresh(&mut self, pid: u32, map: &MemoryMap) {
        let entries = self.scan(pid, map);
        self.flush_pending();
        let entries: Vec<MappingEntry> = entries
            .into_iter()
            .filter_map(|(start, end, bias, key)| {
                let (row_start, row_count) = match self.files.get(&key)?.rows {
                    FileRows::Stored { start, count } => (start, count),
                    _ => (0, 0),
                };
                Some(MappingEntry { start, end, bias, row_start, row_count })
            })
            .chain(map.mappings().filter(|m| m.is_anonymous()).map(|m| match self.code.placed.get(&pid) {
                Some(c) if c.base <= m.start && m.end <= c.end => MappingEntry {
                    start: m.start,
                    end: m.end,
                    bias: c.base,
                    row_start: c.row_start,
                    row_count: c.row_count,
                },
                _ => MappingEntry { start: m.start, end: m.end, bias: 0, row_start: JIT_CODE, row_count: 0 },
            }))
            .collect();
        let mut entries = entries;
        entries.sort_by_key(|e| e.start);
        entries.dedup_by_key(|e| e.start);
        entries.truncate(MAX_MAPPINGS);
        match self.slots.write(pid, entries) {
            Ok(()) => {}
            Err(SlotError::Full) => self.note("processes past --unwind-processes", &SlotError::Full.to_string()),
            Err(e) => tracing::warn!("cannot write the unwind mappings of {pid}: {e}"),
        }
    }

    /// A runtime's rows for `pid`'s code no file backs (see `code_rows`): written into the array,
    /// then into `pid`'s mapping table, from `map` (its memory map now).
    pub fn set_code_rows(&mut self, pid: u32, code: &CodeRows, map: &MemoryMap) {
        let Some(store) = self.store.as_mut() else { return };
        let before = self.code.placed.get(&pid).map_or(0, |p| u64::from(p.row_count));
        match self.code.place(store, pid, code) {
            Ok(placed) => {
                self.stats.code_rows = self.stats.code_rows - before + u64::from(placed.row_count);
                self.refresh(pid, map);
            }
            Err(e) => self.note(&format!("code of process {pid} no file backs"), &e),
        }
    }

    /// `pid`'s mappings as the probes have them, and the rows they name: what a walk in the
    /// agent reads (see `walk`).
    pub fn walk_view(&self, pid: u32) -> Option<(&[MappingEntry], &RowStore)> {
        Some((self.slots.entries(pid)?, self.store.as_ref()?))
    }

    pub fn stats(&self) -> &TableStats {
        &self.stats
    }

    /// Each executable mapping of `pid` as (start, end, bias, file key), compiling new files.
    fn scan(&mut self, pid: u32, map: &MemoryMap) -> Vec<(u64, u64, u64, FileKey)> {
        let mut out = Vec::new();
        let mut mapped = self.mapped.remove(&pid).unwrap_or_default();
        // Only what the process maps now: a library it unloaded is forgotten with its mapping.
        mapped.retain(|(path, start), _| map.mappings().any(|m| m.start == *start && m.path == *path));
        for m in map.mappings() {
            let id = (m.path.clone(), m.start);
            if !mapped.contains_key(&id) {
                // A mapping that cannot be opened or parsed is tried once, not at every tick.
                let key = self.learn(pid, m);
                mapped.insert(id.clone(), key);
            }
            let Some(Some(key)) = mapped.get(&id) else { continue };
            let Some(delta) = self.files.get(key).and_then(|f| f.segments.delta_for_mapping(m.file_offset)) else {
                continue;
            };
            // PC - bias = PC - start + file offset + (vaddr - offset) of its segment.
            out.push((m.start, m.end, m.start.wrapping_sub(m.file_offset).wrapping_sub(delta), key.clone()));
        }
        self.mapped.insert(pid, mapped);
        out
    }

    /// Opens the file behind one mapping and compiles its rows unless its key is known.
    fn learn(&mut self, pid: u32, m: &crate::collect::maps::Mapping) -> Option<FileKey> {
        let started = Instant::now();
        let (key, entry) = if &*m.path == "[vdso]" {
            let image = vdso::own_image()?;
            let elf = object::File::parse(image).ok()?;
            let key = elf.build_id().ok().flatten().map(|id| [b"vdso:", id].concat()).unwrap_or(b"vdso".to_vec());
            if self.files.contains_key(&key) {
                return Some(key);
            }
            (key, self.compile(&m.path, image, crate::files::segments::Segments::of(&elf)))
        } else if m.is_file() {
            let file = File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
                .or_else(|_| File::open(PathBuf::from(format!("/proc/{pid}/root{}", m.path))))
                .ok()?;
            let meta = file.metadata().ok()?;
            let cache = object::ReadCache::new(file);
            let Ok(elf) = object::File::parse(&cache) else {
                self.note(&m.path, "not an ELF file");
                return None;
            };
            let key = match elf.build_id().ok().flatten() {
                Some(id) => id.to_vec(),
                None => {
                    use std::os::unix::fs::MetadataExt;
                    [meta.dev(), meta.ino(), meta.size(), meta.mtime() as u64]
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect()
                }
            };
            if self.files.contains_key(&key) {
                return Some(key);
            }
            let segments = crate::files::segments::Segments::of(&elf);
            (key, self.compile(&m.path, &cache, segments))
        } else {
            return None;
        };
        self.stats.build_ms += started.elapsed().as_secs_f64() * 1e3;
        self.files.insert(key.clone(), entry);
        Some(key)
    }

    fn compile<'d, R: object::ReadRef<'d>>(
        &mut self,
        path: &str,
        data: R,
        segments: crate::files::segments::Segments,
    ) -> FileEntry {
        let rows = match rows::compile(data) {
            Ok(Compiled { rows, bad_entries, cfi_bytes, .. }) => {
                self.stats.bad_entries += bad_entries as u64;
                self.stats.cfi_bytes += cfi_bytes;
                if bad_entries > 0 {
                    self.note(path, &format!("{bad_entries} CFI entries unreadable; their code by frame pointer"));
                }
                FileRows::Pending(rows)
            }
            Err(e) => {
                self.note(path, &e.to_string());
                FileRows::None
            }
        };
        FileEntry { rows, segments }
    }

    /// Writes rows compiled since the last call into the array, while it has room.
    fn flush_pending(&mut self) {
        let Some(store) = self.store.as_mut() else { return };
        let mut full = Vec::new();
        for (key, file) in self.files.iter_mut() {
            let FileRows::Pending(rows) = &file.rows else { continue };
            file.rows = match store.append(rows) {
                Some(start) => {
                    self.stats.files += 1;
                    self.stats.rows += rows.len() as u64;
                    FileRows::Stored { start, count: rows.len() as u32 }
                }
                None => {
                    full.push(key.clone());
                    FileRows::None
                }
            };
        }
        if !full.is_empty() {
            let mut paths: Vec<String> = self
                .mapped
                .values()
                .flatten()
                .filter(|(_, k)| k.as_ref().is_some_and(|k| full.contains(k)))
                .map(|((p, _), _)| p.to_string())
                .collect();
            paths.sort();
            paths.dedup();
            if !self.stats.cap_reached {
                tracing::warn!(
                    "the unwind table is full ({} rows, --unwind-table-rows): {} walked by frame pointer",
                    self.stats.capacity_rows,
                    paths.join(", ")
                );
            }
            self.stats.cap_reached = true;
            for path in paths {
                self.note(&path, "the unwind table is full (--unwind-table-rows)");
            }
        }
    }

    fn note(&mut self, path: &str, why: &str) {
        let note = FileNote { path: path.to_string(), why: why.to_string() };
        if !self.stats.frame_pointer_files.contains(&note) && self.stats.frame_pointer_files.len() < 64 {
            tracing::info!("{path}: walked by frame pointer: {why}");
            self.stats.frame_pointer_files.push(note);
        }
    }
}

fn rows_of(rows: &FileRows) -> u64 {
    match rows {
        FileRows::Pending(rows) => rows.len() as u64,
        FileRows::Stored { count, .. } => u64::from(*count),
        FileRows::None => 0,
    }
}
