//! Go programs from outside: the exact goroutine count (as `runtime.NumGoroutine()` computes it)
//! and every goroutine's stack, read from the live process's memory without stopping it; the
//! heap profile the runtime keeps; and Go's own function table, which names stripped binaries.
//! How the agent uses them (snapshots, bundles, the summary) is in `instance.rs`.
//!
//! Addresses come from the binary's symbol table (plus the load bias of a PIE), struct layouts
//! from its DWARF. The target changes while it is read: every read is bounded, and an
//! inconsistent count is read again.

pub mod args;
pub mod binary;
mod bundle;
mod dump;
mod frames;
mod globals;
pub mod gopclntab;
mod goroutine_watch;
mod goroutines;
pub mod heap;
mod heap_profile;
mod heap_watch;
#[cfg(test)]
mod image_tests;
mod instance;
mod kinds;
mod layout;
mod report;
mod shape;
#[cfg(test)]
mod stripped_tests;
mod versions;

use std::{path::Path, sync::Arc};

use layout::Layout;

use crate::collect::remote::{ProcessMemory, ReadError, RemoteMemory};
use crate::files::shared::PerFile;
use binary::GoBinary;
pub use instance::{file_names, RUNTIME};
use object::{Object, ObjectKind, ObjectSegment, ObjectSymbol};
pub use shape::{Addresses, Offsets};

#[derive(Debug, thiserror::Error)]
pub enum GoError {
    #[error("cannot read the executable: {0}")]
    Binary(String),
    #[error("the binary has no symbol table (built with -ldflags=-s?): {0} not found")]
    NoSymbol(&'static str),
    #[error("the binary's DWARF does not describe {0} (built with -ldflags=-w?)")]
    Layout(String),
    #[error("no DWARF, and no struct layout is known for this binary: {0}")]
    NoLayout(String),
    #[error("no symbol table, and the runtime's globals cannot be found in its code: {0}")]
    Stripped(String),
    #[error("cannot read target memory at {0:#x}")]
    Read(u64),
    #[error("goroutine count stayed inconsistent after {0} reads")]
    Inconsistent(u32),
}

impl From<ReadError> for GoError {
    fn from(e: ReadError) -> Self {
        GoError::Read(e.0)
    }
}

impl From<gimli::Error> for GoError {
    fn from(e: gimli::Error) -> Self {
        GoError::Binary(format!("DWARF: {e}"))
    }
}

/// Whether goroutines can be read for a process.
pub enum GoSupport {
    /// Not a Go program: no goroutine metric, no error.
    NotGo,
    /// A Go program whose goroutines cannot be read, and why (said in summaries).
    Unavailable(String),
    Ready(Box<GoRuntime>),
}

/// `g.atomicstatus` values (runtime2.go); `_Gscan` (0x1000) is masked off. The values are
/// stable across Go versions: states that were retired keep their numbers, new ones are added.
const G_IDLE: u32 = 0;
const G_RUNNABLE: u32 = 1;
const G_RUNNING: u32 = 2;
const G_SYSCALL: u32 = 3;
const G_WAITING: u32 = 4;
const G_DEAD: u32 = 6;
const G_COPYSTACK: u32 = 8;
const G_PREEMPTED: u32 = 9;
/// Newer runtimes: a goroutine the GC found leaked (alive, never to wake).
const G_LEAKED: u32 = 10;
/// Newer runtimes: a dead goroutine kept for an extra M (cgo callbacks); before, it was
/// `_Gdead`. Counted in `sched.ngsys`, so not in `NumGoroutine()`.
const G_DEAD_EXTRA: u32 = 11;
const G_SCAN: u32 = 0x1000;
/// Guards against garbage: more goroutines or Ps than this means a bad read.
const MAX_GOROUTINES: u64 = 10_000_000;
const MAX_PROCS: u64 = 65_536;
/// Goroutines a dump reads at most: each costs a read of its `g` (about 400 bytes) and its
/// frames, so this bounds a dump's memory (tens of MiB) however large or garbled the list is.
pub const MAX_DUMPED_GOROUTINES: u64 = 100_000;
/// Frames walked per goroutine.
pub const MAX_FRAMES: usize = 64;
/// Reads of the count before giving up on an inconsistent one.
const COUNT_TRIES: u32 = 5;

pub struct GoRuntime {
    memory: Box<dyn RemoteMemory>,
    at: Addresses,
    off: Offsets,
    /// Functions by start address (the file's, shared by every process of the binary), to tell
    /// runtime-internal goroutines from user ones; `bias` is added to them in this process.
    functions: Arc<[(u64, String)]>,
    bias: u64,
    wait_reasons: Vec<String>,
}

pub use goroutines::{Goroutine, ReadStats, StackCache};

impl GoSupport {
    /// Inspects the executable of `pid` (through /proc, so a replaced file does not matter);
    /// `files` keeps what each executable says.
    pub fn detect(pid: u32, files: &mut GoFiles) -> GoSupport {
        let exe = format!("/proc/{pid}/exe");
        let Some(file) = files.get(Path::new(&exe), |elf, _| GoFile::of_exe(elf, Path::new(&exe))) else {
            return GoSupport::NotGo;
        };
        match &*file {
            None => GoSupport::NotGo,
            Some(Err(why)) => GoSupport::Unavailable(why.clone()),
            Some(Ok(binary)) => match GoRuntime::open(pid, binary, Path::new(&exe)) {
                Ok(rt) => GoSupport::Ready(Box::new(rt)),
                Err(e) => GoSupport::Unavailable(e.to_string()),
            },
        }
    }
}

/// The Go executables read so far, for every watched process: None for a file that is not Go,
/// else where its runtime is or why it cannot be read.
pub type GoFiles = PerFile<Option<Result<GoFile, String>>>;

/// A Go binary's runtime as its file says: globals and functions at file addresses.
pub struct GoFile {
    at: Addresses,
    off: Offsets,
    functions: Arc<[(u64, String)]>,
    /// Position-independent, and its lowest segment's page: to find where it is loaded.
    dynamic: bool,
    lowest: u64,
}

impl GoFile {
    /// None when `elf` is not a Go binary.
    fn of_exe(elf: &object::File<'_>, exe: &Path) -> Option<Result<Self, String>> {
        let is_go = elf.section_by_name(".go.buildinfo").is_some() || elf.section_by_name(".gopclntab").is_some();
        is_go.then(|| Self::read(elf, exe).map_err(|e| e.to_string()))
    }

    fn read(elf: &object::File<'_>, exe: &Path) -> Result<Self, GoError> {
        let has_symbols = elf.symbols().any(|s| s.name() == Ok("runtime.allgs"));
        let layout = if elf.section_by_name(".debug_info").is_some() { Some(Layout::parse(elf)?) } else { None };
        let (off, sched_lock) = match &layout {
            Some(layout) => (layout.offsets()?, layout.offset("runtime.schedt", &["lock"]).ok()),
            None => versions::offsets_of(elf)?,
        };
        let heap_cycle_words = versions::heap_cycle_words(elf, layout.as_ref());
        let (at, mut functions) = if has_symbols {
            let symbol = |name: &'static str| -> Result<(u64, u64), GoError> {
                elf.symbols()
                    .find(|s| s.name() == Ok(name))
                    .map(|s| (s.address(), s.size()))
                    .ok_or(GoError::NoSymbol(name))
            };
            let (wait_reasons, wait_reasons_size) = symbol("runtime.waitReasonStrings")?;
            let at = Addresses {
                heap_cycle_words,
                mbuckets: symbol("runtime.mbuckets")?.0,
                mem_profile_rate: symbol("runtime.MemProfileRate")?.0,
                disable_memory_profiling: symbol("runtime.disableMemoryProfiling").ok().map(|s| s.0),
                mprof_cycle: symbol("runtime.mProfCycle").ok().map(|s| s.0),
                allgs: symbol("runtime.allgs")?.0,
                allglen: symbol("runtime.allglen")?.0,
                allp: symbol("runtime.allp")?.0,
                sched: symbol("runtime.sched")?.0,
                wait_reasons,
                wait_reasons_len: wait_reasons_size / 16,
            };
            let functions: Vec<(u64, String)> = elf
                .symbols()
                .filter(|s| s.kind() == object::SymbolKind::Text)
                .filter_map(|s| Some((s.address(), s.name().ok()?.to_string())))
                .collect();
            (at, functions)
        } else {
            // No symbol table: the globals from the runtime's instructions, functions from
            // .gopclntab (see globals.rs).
            let go = GoBinary::open(exe).ok_or_else(|| GoError::Stripped("no .gopclntab".into()))?;
            let g = globals::find(&go).map_err(|e| GoError::Stripped(e.to_string()))?;
            let h = globals::find_heap(&go).map_err(|e| GoError::Stripped(e.to_string()))?;
            let lock = sched_lock.ok_or_else(|| GoError::Layout("runtime.schedt.lock".into()))?;
            let at = Addresses {
                heap_cycle_words,
                mbuckets: h.mbuckets,
                mem_profile_rate: h.mem_profile_rate,
                disable_memory_profiling: h.disable_memory_profiling,
                mprof_cycle: h.mprof_cycle,
                allgs: g.allgs,
                allglen: g.allglen,
                allp: g.allp,
                sched: g.sched_lock - lock,
                wait_reasons: g.wait_reasons,
                wait_reasons_len: g.wait_reasons_len,
            };
            (at, go.functions().to_vec())
        };
        functions.sort_unstable();
        let lowest = elf.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff;
        Ok(Self { at, off, functions: functions.into(), dynamic: elf.kind() == ObjectKind::Dynamic, lowest })
    }
}

impl GoRuntime {
    fn open(pid: u32, file: &GoFile, exe: &Path) -> Result<Self, GoError> {
        let bias = load_bias(pid, file, exe);
        let memory = Box::new(ProcessMemory::new(pid));
        let rt = Self::from_parts(memory, file.at.moved(bias), file.off.clone(), file.functions.clone(), bias);
        rt.count()?; // fail now, not at the first tick, if the layout is wrong
        Ok(rt)
    }

    /// A reader over `memory`, with the globals at `at` and struct layouts `off`; `functions`
    /// (start address, name) sorted by address. `open` finds these in the binary; tests and the
    /// fuzz target make them up.
    pub fn from_parts(
        memory: Box<dyn RemoteMemory>,
        at: Addresses,
        off: Offsets,
        functions: Arc<[(u64, String)]>,
        bias: u64,
    ) -> Self {
        let mut rt = Self { memory, at, off, functions, bias, wait_reasons: Vec::new() };
        rt.wait_reasons = rt.read_wait_reasons();
        rt
    }

    /// Live goroutines, computed as `runtime.gcount()` does: all goroutines ever created, less
    /// the free ones (global and per-P lists) and the runtime's own.
    pub fn count(&self) -> Result<u64, GoError> {
        for _ in 0..COUNT_TRIES {
            if let Some(n) = self.try_count()? {
                return Ok(n);
            }
        }
        Err(GoError::Inconsistent(COUNT_TRIES))
    }

    fn try_count(&self) -> Result<Option<u64>, GoError> {
        let m = &*self.memory;
        let allglen = m.u64(self.at.allglen)?;
        let mut global_free = 0i64;
        for offset in &self.off.sched_gfree {
            global_free += i64::from(m.i32(self.at.sched + offset)?);
        }
        let system = i64::from(m.i32(self.at.sched + self.off.sched_ngsys)?);
        let (allp, nprocs) = (m.u64(self.at.allp)?, m.u64(self.at.allp + 8)?);
        if allglen > MAX_GOROUTINES || nprocs > MAX_PROCS {
            return Ok(None);
        }
        let mut per_p_free = 0i64;
        for i in 0..nprocs {
            // Pointers read from the target may be garbage: address arithmetic wraps, and the
            // read of a bad address fails.
            let p = m.u64(allp.wrapping_add(8 * i))?;
            per_p_free += i64::from(m.i32(p.wrapping_add(self.off.p_gfree_n))?);
        }
        let n = allglen as i64 - global_free - system - per_p_free;
        Ok((n >= 1 && n <= allglen as i64).then_some(n as u64))
    }

    fn state(&self, status: u32, wait_reason: u8) -> String {
        match status {
            G_RUNNABLE => "runnable".into(),
            G_RUNNING => "running".into(),
            G_SYSCALL => "syscall".into(),
            G_COPYSTACK => "copystack".into(),
            G_PREEMPTED => "preempted".into(),
            G_LEAKED => "leaked".into(),
            G_WAITING => self
                .wait_reasons
                .get(wait_reason as usize)
                .filter(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| "waiting".into()),
            other => format!("status {other}"),
        }
    }

    /// A goroutine started in the runtime (other than runtime.main) is the runtime's own, as in
    /// `isSystemGoroutine`.
    fn is_system(&self, startpc: u64) -> bool {
        let pc = startpc.wrapping_sub(self.bias);
        let i = self.functions.partition_point(|(a, _)| *a <= pc);
        let Some((_, name)) = i.checked_sub(1).and_then(|i| self.functions.get(i)) else { return false };
        name.starts_with("runtime.") && name != "runtime.main" && name != "runtime.handleAsyncEvent"
    }

    fn read_wait_reasons(&self) -> Vec<String> {
        (0..self.at.wait_reasons_len.min(256))
            .map(|i| {
                let entry = self.at.wait_reasons + 16 * i;
                let (Ok(ptr), Ok(len)) = (self.memory.u64(entry), self.memory.u64(entry + 8)) else {
                    return String::new();
                };
                if len == 0 || len > 128 {
                    return String::new();
                }
                let mut buf = vec![0u8; len as usize];
                match self.memory.read(ptr, &mut buf) {
                    Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
                    Err(_) => String::new(),
                }
            })
            .collect()
    }
}

/// How far a position-independent executable was moved at load: where its first segment is
/// mapped, less where the file says it goes. 0 for fixed-address executables (Go's default).
fn load_bias(pid: u32, file: &GoFile, exe: &Path) -> u64 {
    if !file.dynamic {
        return 0;
    }
    let target = std::fs::read_link(exe).unwrap_or_default();
    let lowest = file.lowest;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter(|l| l.ends_with(&*target.to_string_lossy()))
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let start = u64::from_str_radix(f.next()?.split('-').next()?, 16).ok()?;
            let offset = u64::from_str_radix(f.nth(1)?, 16).ok()?;
            (offset == 0).then_some(start.wrapping_sub(lowest))
        })
        .unwrap_or(0)
}
