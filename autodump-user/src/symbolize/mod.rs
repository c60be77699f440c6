//! Turns instruction pointers into function names with blazesym, once per unique address.
//!
//! User addresses are translated through the target's memory map into (file, file offset) and
//! symbolized from the ELF file itself, so stacks recorded just before the target exits still
//! get names. Inlined functions and source lines come from DWARF when the binary has it. An
//! address that cannot be symbolized becomes `module+0xoffset`, never nothing.

use std::{cell::RefCell, collections::HashMap, path::PathBuf, rc::Rc, sync::Arc};

use autodump_common::runtimes::{frame_kind, kind};
use blazesym::symbolize::{
    source::{Kernel, Source},
    Input, Symbolized, Symbolizer as Blaze,
};

use crate::{
    collect::maps::{Mapping, MemoryMap},
    files::identity::{open_path, FileId},
};

pub mod files;
mod location;
mod runtime;

use files::SymbolFiles;
use location::{located, named, unknown, why_not_a_file};
pub use location::{Frame, Location};
pub use runtime::{RuntimeNames, Update};

/// Addresses whose names one process keeps at most; past it the cache starts afresh (counted).
/// A process that runs new code all the time does not grow the agent for ever.
pub const MAX_CACHED_ADDRESSES: usize = 1 << 16;

/// The names of one process's addresses. What is per file (symbol tables, debug files, Go
/// tables, names by file offset) is shared with every other process through [`SymbolFiles`];
/// what is kept here is the process's own: its memory map, which file each mapping is, and the
/// names of the addresses it has shown.
/// A mapping of one process, by its start and path.
type MappingKey = (u64, Arc<str>);

pub struct Symbolizer {
    pid: u32,
    files: Rc<RefCell<SymbolFiles>>,
    memory: MemoryMap,
    user: HashMap<u64, Arc<Location>>,
    /// Per mapping (start, path): its file's identity and where to open it; None: unreadable.
    file_ids: HashMap<MappingKey, Option<(FileId, PathBuf)>>,
    /// When the map was last read because an address fell outside it.
    missed_at: Option<std::time::Instant>,
    /// Times the address cache was started afresh, at its cap or for the memory budget.
    pub cache_resets: u64,
    /// The runtimes the process runs: names of their frames and of their code outside files.
    runtimes: Vec<Box<dyn RuntimeNames>>,
}

/// An address outside every known mapping has the map read again, at most this often.
const MISS_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Symbolizer {
    /// A symbolizer with its own file cache (tests, tools): debug files in the default place,
    /// files that runtimes name themselves opened by `readers`.
    pub fn new(pid: u32, readers: Vec<files::FileReader>) -> Self {
        let files = SymbolFiles::new(vec![PathBuf::from(crate::files::debug_info::DEFAULT_DEBUG_DIR)], readers);
        Self::shared(pid, Rc::new(RefCell::new(files)))
    }

    /// A symbolizer of process `pid` whose files are named through `files`, shared with others.
    pub fn shared(pid: u32, files: Rc<RefCell<SymbolFiles>>) -> Self {
        Self {
            pid,
            files,
            memory: MemoryMap::default(),
            user: HashMap::new(),
            file_ids: HashMap::new(),
            missed_at: None,
            cache_resets: 0,
            runtimes: Vec::new(),
        }
    }

    /// The process runs a runtime that names some of its frames or code (see `runtimes`).
    pub fn add_runtime(&mut self, names: Box<dyn RuntimeNames>) {
        self.runtimes.push(names);
    }

    /// Asks the runtimes what changed (`when`), and forgets the names that went stale.
    pub fn update_runtimes(&mut self, when: Update) {
        for runtime in &mut self.runtimes {
            for address in runtime.update(self.pid, when) {
                self.user.remove(&address);
            }
        }
    }

    /// `location` named by a runtime as it is now, if it is code in memory no file backs that
    /// had no name when it was recorded (a JIT named it since).
    pub fn rename_anonymous(&mut self, location: &Location) -> Option<Location> {
        let unnamed = !location.kernel
            && location.unnamed.is_some()
            && location.mapping.as_ref().is_some_and(Mapping::is_anonymous);
        if !unnamed {
            return None;
        }
        self.runtimes.iter_mut().find_map(|r| r.anonymous(location.address, location.mapping.as_ref()))
    }

    /// A named user stack as the process's runtimes have readers see it.
    pub fn tidy(&self, stack: Vec<Arc<Location>>) -> Vec<Arc<Location>> {
        self.runtimes.iter().fold(stack, |stack, r| r.tidy(stack))
    }

    /// The pseudo frame a runtime sets at the root of this off-CPU stack, if it parked the thread.
    pub fn idle_root(&self, user: &[Arc<Location>]) -> Option<&'static str> {
        self.runtimes.iter().find_map(|r| r.idle_root(user))
    }

    /// Learns mappings the target added since the last call. Call while the target is alive,
    /// before symbolizing what was recorded in the interval. Returns the map as read now (the
    /// unwind tables need the current one, not the merged one kept here).
    pub fn refresh_maps(&mut self) -> Option<MemoryMap> {
        let current = MemoryMap::read(self.pid).ok()?;
        self.memory.merge(current.clone());
        let memory = &self.memory;
        self.file_ids.retain(|(start, path), _| memory.find(*start).is_some_and(|m| m.path == *path));
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
            if let Some((id, path)) = self.file_id(&m) {
                // A file its runtime names itself (a Go binary, from its own table, mapped on
                // demand): loading its symbols or DWARF would be work for nothing.
                let mut files = self.files.borrow_mut();
                if !files.names_itself(&id, &path, &m.path) {
                    files.name(&id, &path, &m.path, &[m.file_offset]);
                }
            }
        }
    }

    /// Symbolizes user-space addresses (already adjusted: see [`lookup_addresses`]).
    pub fn user(&mut self, addrs: &[u64]) -> Vec<Arc<Location>> {
        let mut missing: Vec<u64> = unique_missing(addrs, &self.user);
        if self.runtimes.iter().any(|r| r.names_anonymous()) {
            let memory = &self.memory;
            let anonymous = |a: &u64| frame_kind(*a) == kind::NATIVE && memory.find(*a).is_none_or(|m| !m.is_file());
            if missing.iter().any(anonymous) {
                self.update_runtimes(Update::Unnamed);
                missing = unique_missing(addrs, &self.user);
            }
        }
        if self.user.len() + missing.len() > MAX_CACHED_ADDRESSES {
            self.clear_cache();
        }
        // Runtime frames: named by their runtime, from the live process.
        missing.retain(|&a| {
            let kind = frame_kind(a);
            if kind == kind::NATIVE {
                return true;
            }
            let named = self.runtimes.iter_mut().filter(|r| r.kind() == Some(kind)).find_map(|r| r.frame(a));
            let location = named.unwrap_or_else(|| unknown_frame(a, kind));
            self.user.insert(a, Arc::new(location));
            false
        });
        // The map is read when it may have changed (see `Session::observe`): an address outside
        // it may be in a library loaded since.
        let outside = missing.iter().any(|&a| self.memory.find(a).is_none());
        if outside && self.missed_at.is_none_or(|t| t.elapsed() >= MISS_REFRESH) {
            self.missed_at = Some(std::time::Instant::now());
            self.refresh_maps();
        }
        let mut by_file: HashMap<MappingKey, Vec<(u64, Mapping)>> = HashMap::new();
        for &addr in &missing {
            match self.memory.find(addr).cloned() {
                Some(m) if m.is_file() => by_file.entry((m.start, m.path.clone())).or_default().push((addr, m)),
                Some(m) if &*m.path == "[vdso]" => {
                    let vdso_name =
                        self.files.borrow().vdso().and_then(|v| v.name(addr - m.start).map(Arc::<str>::from));
                    let location = match vdso_name {
                        Some(name) => named(addr, m, &name),
                        None => unknown(addr, false, Some(m.clone()), why_not_a_file(&Some(m))),
                    };
                    self.user.insert(addr, Arc::new(location));
                }
                mapping => {
                    let location = self.runtimes.iter_mut().find_map(|r| r.anonymous(addr, mapping.as_ref()));
                    let location = location.unwrap_or_else(|| {
                        let why = why_not_a_file(&mapping);
                        unknown(addr, false, mapping, why)
                    });
                    self.user.insert(addr, Arc::new(location));
                }
            }
        }
        for (_, entries) in by_file {
            let mapping = entries[0].1.clone();
            let offsets: Vec<u64> = entries.iter().map(|(addr, m)| addr - m.start + m.file_offset).collect();
            let names = match self.file_id(&mapping) {
                Some((id, path)) => self.files.borrow_mut().name(&id, &path, &mapping.path, &offsets),
                None => Vec::new(),
            };
            let why: Arc<str> = "the file cannot be read".into();
            for (i, (addr, m)) in entries.into_iter().enumerate() {
                let named = names.get(i).cloned().unwrap_or_else(|| files::Named::Unnamed(why.clone()));
                self.user.insert(addr, Arc::new(named.located(addr, m)));
            }
        }
        addrs.iter().map(|a| self.user[a].clone()).collect()
    }

    /// Forgets the names of addresses seen so far (the shared file caches keep theirs).
    pub fn clear_cache(&mut self) {
        self.runtimes.iter_mut().for_each(|r| r.clear());
        if !self.user.is_empty() {
            self.user = HashMap::new();
            self.cache_resets += 1;
        }
    }

    /// Addresses named and kept for this process.
    pub fn cached(&self) -> usize {
        self.user.len()
    }

    /// Symbolizes kernel addresses from kallsyms (the names are the same for every process).
    pub fn kernel(&mut self, addrs: &[u64]) -> Vec<Arc<Location>> {
        KERNEL_NAMES.with(|cache| {
            let mut cache = cache.borrow_mut();
            let missing = unique_missing(addrs, &cache);
            if cache.len() + missing.len() > MAX_CACHED_ADDRESSES {
                cache.clear();
            }
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
                    cache.insert(*addr, Arc::new(location));
                }
            }
            addrs.iter().map(|a| cache[a].clone()).collect()
        })
    }

    /// The identity of the file behind mapping `m`, and where to open it; learnt once per
    /// mapping while the process lives.
    fn file_id(&mut self, m: &Mapping) -> Option<(FileId, PathBuf)> {
        let pid = self.pid;
        self.file_ids
            .entry((m.start, m.path.clone()))
            .or_insert_with(|| {
                let path = open_path(pid, m.start, m.end, &m.path);
                FileId::of_path(&path).map(|id| (id, path))
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
    /// Kernel addresses named so far, for every process.
    static KERNEL_NAMES: RefCell<HashMap<u64, Arc<Location>>> = RefCell::new(HashMap::new());
}

/// Kernel frames: kallsyms only (no vmlinux with DWARF on most hosts).
fn kernel_source() -> Source<'static> {
    Source::Kernel(Kernel { vmlinux: blazesym::MaybeDefault::None, debug_syms: false, ..Kernel::default() })
}

/// Return addresses point after the call; looking up `ip - 1` for every frame but the
/// innermost names the calling line, not the next one (as perf and pprof do).
/// A runtime's frames (see `autodump_common::runtimes`) are no addresses, and stay as they are.
pub fn lookup_addresses(ips: &[u64]) -> Vec<u64> {
    ips.iter()
        .enumerate()
        .map(|(i, &ip)| if i == 0 || frame_kind(ip) != kind::NATIVE { ip } else { ip.saturating_sub(1) })
        .collect()
}

/// A runtime frame no runtime of the process names (its kind unknown here, or garbage).
fn unknown_frame(entry: u64, kind: u8) -> Location {
    let name: Arc<str> = format!("[frame of kind {kind}: {entry:#x}]").into();
    let frames = [Frame { function: name, file: None, line: None }].into();
    let why = "a runtime frame no runtime of the process names".into();
    Location { address: entry, kernel: false, mapping: None, frames, unnamed: Some(why) }
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
        let mut s = Symbolizer::new(std::process::id(), Vec::new());
        s.refresh_maps();
        let addr = marker_function_for_symbolizer_test();
        let loc = s.user(&[addr]);
        let names: Vec<&str> = loc[0].frames.iter().map(|f| &*f.function).collect();
        assert!(names.iter().any(|n| n.contains("marker_function_for_symbolizer_test")), "got {names:?}");
        assert!(loc[0].mapping.is_some());
    }

    #[test]
    fn unmapped_addresses_keep_a_name() {
        let mut s = Symbolizer::new(std::process::id(), Vec::new());
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
