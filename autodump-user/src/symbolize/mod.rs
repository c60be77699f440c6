//! Turns instruction pointers into function names with blazesym, once per unique address.
//!
//! User addresses are translated through the target's memory map into (file, file offset) and
//! symbolized from the ELF file itself, so stacks recorded just before the target exits still
//! get names. Inlined functions and source lines come from DWARF when the binary has it. An
//! address that cannot be symbolized becomes `module+0xoffset`, never nothing.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use blazesym::symbolize::{
    source::{Elf, Kernel, Source},
    Input, Symbolized, Symbolizer as Blaze,
};

use crate::collect::maps::{Mapping, MemoryMap};

mod debug_info;
mod fde;
pub mod go;
pub mod gopclntab;
mod location;
pub(crate) mod segments;
pub(crate) mod vdso;

pub use debug_info::DEFAULT_DEBUG_DIR;
use go::GoBinary;
use location::{go_located, grouped, located, named, unknown, why_not_a_file};
pub use location::{Frame, Location};

pub struct Symbolizer {
    blaze: Blaze,
    pid: u32,
    memory: MemoryMap,
    user: HashMap<u64, Arc<Location>>,
    kernel: HashMap<u64, Arc<Location>>,
    elf_paths: HashMap<Arc<str>, PathBuf>,
    /// Per file: its Go table when it is a Go binary without a symbol table.
    go_tables: HashMap<Arc<str>, Option<Arc<GoBinary>>>,
    /// The vDSO's symbols, from the agent's own copy (the same image in every process).
    vdso: Option<vdso::Vdso>,
    /// Per file: where its functions start, from `.eh_frame`, for addresses no symbol covers.
    function_starts: HashMap<Arc<str>, Option<Arc<fde::FunctionStarts>>>,
    /// Per file: why some of its addresses have no name.
    why_unnamed: HashMap<Arc<str>, Arc<str>>,
    /// Where separate debug files are looked for (`--debug-dir`).
    debug_dirs: Vec<PathBuf>,
    /// Per file: its separate debug file, found by build-id, when it has no symbols.
    debug_files: HashMap<Arc<str>, Option<Arc<debug_info::DebugFile>>>,
}

impl Symbolizer {
    pub fn new(pid: u32) -> Self {
        Self::with_debug_dirs(pid, vec![PathBuf::from(debug_info::DEFAULT_DEBUG_DIR)])
    }

    /// A symbolizer that looks for separate debug files in `debug_dirs`.
    pub fn with_debug_dirs(pid: u32, debug_dirs: Vec<PathBuf>) -> Self {
        Self {
            blaze: Blaze::builder()
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .enable_demangling(true)
                .set_debug_dirs(Some(&debug_dirs))
                .build(),
            pid,
            memory: MemoryMap::default(),
            user: HashMap::new(),
            kernel: HashMap::new(),
            elf_paths: HashMap::new(),
            go_tables: HashMap::new(),
            vdso: vdso::Vdso::own(),
            function_starts: HashMap::new(),
            why_unnamed: HashMap::new(),
            debug_dirs,
            debug_files: HashMap::new(),
        }
    }

    /// Learns mappings the target added since the last call. Call while the target is alive,
    /// before symbolizing what was recorded in the interval. Returns the map as read now (the
    /// unwind tables need the current one, not the merged one kept here).
    pub fn refresh_maps(&mut self) -> Option<MemoryMap> {
        let current = MemoryMap::read(self.pid).ok()?;
        self.memory.merge(current.clone());
        Some(current)
    }

    /// The kind of memory `addr` is in, as of the last read of the target's map.
    pub fn region_of(&self, addr: u64) -> Option<crate::collect::maps::Region> {
        self.memory.region_of(addr)
    }

    /// Loads now what the first symbolization would load while the target is profiled: the
    /// kernel's symbols (kallsyms, about 200,000 lines) and the executable's symbol tables. A
    /// one-time cost, moved to start-up. Nothing is cached under a real address.
    pub fn warm_up(&mut self, exe: &std::path::Path) {
        KERNEL_SYMBOLS.with(|k| drop(k.symbolize(&kernel_source(), Input::AbsAddr(&[KERNEL_TEXT]))));
        let exe = exe.to_string_lossy();
        let exe_mapping = self.memory.mappings().find(|m| *m.path == *exe).cloned();
        if let Some(m) = exe_mapping {
            // A Go binary is named from its own table, mapped on demand: loading its symbols or
            // DWARF (large in a Go binary) would be work for nothing.
            if self.go_table(&m.path).is_none() {
                let elf = Source::Elf(Elf::new(self.elf_path(&m.path)));
                let _ = self.blaze.symbolize(&elf, Input::FileOffset(&[m.file_offset]));
            }
        }
    }

    /// Symbolizes user-space addresses (already adjusted: see [`lookup_addresses`]).
    pub fn user(&mut self, addrs: &[u64]) -> Vec<Arc<Location>> {
        let missing: Vec<u64> = unique_missing(addrs, &self.user);
        let mut by_file: HashMap<Arc<str>, Vec<(u64, Mapping)>> = HashMap::new();
        for &addr in &missing {
            match self.memory.find(addr).cloned() {
                Some(m) if m.is_file() => {
                    by_file.entry(m.path.clone()).or_default().push((addr, m));
                }
                Some(m) if &*m.path == "[vdso]" => {
                    let location = match self.vdso.as_ref().and_then(|v| v.name(addr - m.start)) {
                        Some(name) => named(addr, m, name),
                        None => unknown(addr, false, Some(m.clone()), why_not_a_file(&Some(m))),
                    };
                    self.user.insert(addr, Arc::new(location));
                }
                mapping => {
                    let why = why_not_a_file(&mapping);
                    let location = unknown(addr, false, mapping, why);
                    self.user.insert(addr, Arc::new(location));
                }
            }
        }
        for (path, entries) in by_file {
            let offsets: Vec<u64> = entries.iter().map(|(addr, m)| addr - m.start + m.file_offset).collect();
            // Go code from Go's own table; the rest (cgo's C, or a table we cannot read) from
            // the ELF file's symbols.
            let (entries, offsets): (Vec<(u64, Mapping)>, Vec<u64>) = match self.go_table(&path) {
                Some(go) => entries
                    .into_iter()
                    .zip(offsets)
                    .filter_map(|((addr, mapping), offset)| match go.frames(offset) {
                        Some(frames) => {
                            self.user.insert(addr, Arc::new(go_located(addr, mapping, frames)));
                            None
                        }
                        None => Some(((addr, mapping), offset)),
                    })
                    .unzip(),
                None => (entries, offsets),
            };
            if entries.is_empty() {
                continue;
            }
            // A stripped file with a debug file by build-id is named from that file, by virtual
            // address (its file offsets are not the executable's).
            let debug_file = self.debug_file(&path);
            let vaddrs: Vec<u64>;
            let (elf, input) = match &debug_file {
                Some(debug) => {
                    vaddrs = offsets.iter().map(|&o| debug.virtual_address(o).unwrap_or(0)).collect();
                    (Source::Elf(Elf::new(&debug.path)), Input::VirtOffset(&vaddrs[..]))
                }
                None => (Source::Elf(Elf::new(self.elf_path(&path))), Input::FileOffset(&offsets[..])),
            };
            let results = self.blaze.symbolize(&elf, input).unwrap_or_default();
            let found: Vec<Option<Location>> = entries
                .iter()
                .enumerate()
                .map(|(i, (addr, mapping))| match results.get(i) {
                    Some(Symbolized::Sym(sym)) => Some(located(*addr, false, Some(mapping.clone()), sym)),
                    _ => None,
                })
                .collect();
            drop(results);
            for (((addr, mapping), offset), found) in entries.into_iter().zip(offsets).zip(found) {
                // No symbol: one name per function, from the unwind table's function start.
                let location = found.unwrap_or_else(|| {
                    let why = self.why_unnamed(&path);
                    match self.function_starts(&path).and_then(|f| f.start_of(offset)) {
                        Some(start) => grouped(addr, mapping, start, why),
                        None => unknown(addr, false, Some(mapping), why),
                    }
                });
                self.user.insert(addr, Arc::new(location));
            }
        }
        addrs.iter().map(|a| self.user[a].clone()).collect()
    }

    /// Symbolizes kernel addresses from kallsyms.
    pub fn kernel(&mut self, addrs: &[u64]) -> Vec<Arc<Location>> {
        let missing = unique_missing(addrs, &self.kernel);
        if !missing.is_empty() {
            let locations: Vec<Location> = KERNEL_SYMBOLS.with(|k| {
                let results = k.symbolize(&kernel_source(), Input::AbsAddr(&missing)).unwrap_or_default();
                let at = |i: usize, addr: u64| match results.get(i) {
                    Some(Symbolized::Sym(sym)) => located(addr, true, None, sym),
                    _ => unknown(addr, true, None, "not in kallsyms".into()),
                };
                missing.iter().enumerate().map(|(i, &addr)| at(i, addr)).collect()
            });
            for (addr, location) in missing.iter().zip(locations) {
                self.kernel.insert(*addr, Arc::new(location));
            }
        }
        addrs.iter().map(|a| self.kernel[a].clone()).collect()
    }

    /// The Go table of `path` when it is a Go binary. Go code is named from it whether the
    /// binary is stripped or not, as Go's own tools do, so a stripped build's stacks read exactly
    /// like an unstripped one's. Decided once per file.
    fn go_table(&mut self, path: &Arc<str>) -> Option<Arc<GoBinary>> {
        if let Some(known) = self.go_tables.get(path) {
            return known.clone();
        }
        let table = GoBinary::open(&self.elf_path(path)).map(Arc::new);
        if let Some(go) = &table {
            tracing::info!(file = %path, version = ?go.version(), inlined = go.has_inline_trees(), "Go binary: symbolized from .gopclntab");
        }
        self.go_tables.insert(path.clone(), table.clone());
        table
    }

    /// The function starts of `path`, read the first time one of its addresses has no symbol.
    fn function_starts(&mut self, path: &Arc<str>) -> Option<Arc<fde::FunctionStarts>> {
        if let Some(known) = self.function_starts.get(path) {
            return known.clone();
        }
        let starts = fde::FunctionStarts::open(&self.elf_path(path)).map(Arc::new);
        if let Some(s) = &starts {
            tracing::info!(file = %path, functions = s.len(), "no symbols: functions told apart by .eh_frame");
        }
        self.function_starts.insert(path.clone(), starts.clone());
        starts
    }

    /// The separate debug file of `path`, looked for once.
    fn debug_file(&mut self, path: &Arc<str>) -> Option<Arc<debug_info::DebugFile>> {
        if let Some(known) = self.debug_files.get(path) {
            return known.clone();
        }
        let found = debug_info::find_by_build_id(&self.elf_path(path), &self.debug_dirs).map(Arc::new);
        if let Some(found) = &found {
            tracing::info!(file = %path, debug_file = %found.path.display(), "symbols from a separate debug file");
        }
        self.debug_files.insert(path.clone(), found.clone());
        found
    }

    /// Why `path` leaves addresses unnamed: no symbol table and no debug file, or symbols that
    /// do not cover them.
    fn why_unnamed(&mut self, path: &Arc<str>) -> Arc<str> {
        if let Some(why) = self.why_unnamed.get(path) {
            return why.clone();
        }
        let why: Arc<str> = match debug_info::inspect(&self.elf_path(path)) {
            Some(info) if info.symbols => "no symbol covers these addresses".into(),
            Some(info) => format!(
                "stripped (no symbol table or DWARF), and no debug file{} in {}",
                if info.build_id { " by build-id or debug link" } else { " by debug link" },
                self.debug_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
            )
            .into(),
            None => "the file cannot be read".into(),
        };
        self.why_unnamed.insert(path.clone(), why.clone());
        why
    }

    /// Where to open a mapped file: through the target's root while it lives (containers see
    /// other files), else the path itself.
    fn elf_path(&mut self, path: &Arc<str>) -> PathBuf {
        let pid = self.pid;
        self.elf_paths
            .entry(path.clone())
            .or_insert_with(|| {
                let rooted = PathBuf::from(format!("/proc/{pid}/root{path}"));
                if rooted.exists() {
                    rooted
                } else {
                    PathBuf::from(&**path)
                }
            })
            .clone()
    }
}

/// Where x86-64 kernel text starts without KASLR: any kernel address makes blazesym load kallsyms.
const KERNEL_TEXT: u64 = 0xffff_ffff_8100_0000;

thread_local! {
    /// The kernel's symbols are the same for every process: one parse of kallsyms (about 200,000
    /// lines), shared by every session, not one per watched process.
    static KERNEL_SYMBOLS: Blaze = Blaze::new();
}

/// Kernel frames: kallsyms only (no vmlinux with DWARF on most hosts).
fn kernel_source() -> Source<'static> {
    Source::Kernel(Kernel { vmlinux: blazesym::MaybeDefault::None, debug_syms: false, ..Kernel::default() })
}

/// Return addresses point after the call; looking up `ip - 1` for every frame but the
/// innermost names the calling line, not the next one (as perf and pprof do).
pub fn lookup_addresses(ips: &[u64]) -> Vec<u64> {
    ips.iter().enumerate().map(|(i, &ip)| if i == 0 { ip } else { ip.saturating_sub(1) }).collect()
}

fn unique_missing(addrs: &[u64], cache: &HashMap<u64, Arc<Location>>) -> Vec<u64> {
    let mut missing: Vec<u64> = addrs.iter().copied().filter(|a| !cache.contains_key(a)).collect();
    missing.sort_unstable();
    missing.dedup();
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_symbolizer_test() -> u64 {
        marker_function_for_symbolizer_test as *const () as u64
    }

    #[test]
    fn names_a_function_of_this_test_binary() {
        let mut s = Symbolizer::new(std::process::id());
        s.refresh_maps();
        let addr = marker_function_for_symbolizer_test();
        let loc = s.user(&[addr]);
        let names: Vec<&str> = loc[0].frames.iter().map(|f| &*f.function).collect();
        assert!(names.iter().any(|n| n.contains("marker_function_for_symbolizer_test")), "got {names:?}");
        assert!(loc[0].mapping.is_some());
    }

    #[test]
    fn unmapped_addresses_keep_a_name() {
        let mut s = Symbolizer::new(std::process::id());
        s.refresh_maps();
        let loc = s.user(&[0x10]);
        assert_eq!(&*loc[0].frames[0].function, "[unknown]+0x10");
    }

    #[test]
    fn return_addresses_are_moved_into_the_call() {
        assert_eq!(lookup_addresses(&[100, 200, 300]), vec![100, 199, 299]);
        assert!(lookup_addresses(&[]).is_empty());
    }
}
