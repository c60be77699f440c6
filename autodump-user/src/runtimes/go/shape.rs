//! What the Go reader must know of a runtime: where its globals are and how its structs are laid
//! out. `GoRuntime::open` finds both in the binary; `over_image` makes them up for tests and
//! fuzzing.

use super::GoRuntime;
use crate::collect::remote::ImageMemory;

/// Where the runtime's globals are in the process, from the binary's symbol table.
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    pub allgs: u64,
    pub allglen: u64,
    pub allp: u64,
    pub sched: u64,
    pub wait_reasons: u64,
    pub wait_reasons_len: u64,
    /// The heap profile's: `runtime.mbuckets`, `runtime.MemProfileRate`, and where known
    /// `runtime.disableMemoryProfiling` and `runtime.mProfCycle`.
    pub mbuckets: u64,
    /// Words per `memRecordCycle`: 4 (with byte counts) before Go 1.26, 2 since.
    pub heap_cycle_words: u64,
    pub mem_profile_rate: u64,
    pub disable_memory_profiling: Option<u64>,
    pub mprof_cycle: Option<u64>,
}

impl Addresses {
    /// The same globals in a process that loaded the binary `bias` bytes from its addresses.
    pub fn moved(&self, bias: u64) -> Self {
        let at = |a: u64| a.wrapping_add(bias);
        Self {
            allgs: at(self.allgs),
            allglen: at(self.allglen),
            allp: at(self.allp),
            sched: at(self.sched),
            wait_reasons: at(self.wait_reasons),
            mbuckets: at(self.mbuckets),
            mem_profile_rate: at(self.mem_profile_rate),
            disable_memory_profiling: self.disable_memory_profiling.map(at),
            mprof_cycle: self.mprof_cycle.map(at),
            ..*self
        }
    }
}

/// Where fields sit in the runtime's structs, from the binary's DWARF.
#[derive(Clone, Debug)]
pub struct Offsets {
    pub g_size: u64,
    pub g_stack_lo: u64,
    pub g_stack_hi: u64,
    pub g_sched_pc: u64,
    pub g_sched_bp: u64,
    pub g_status: u64,
    pub g_waitreason: u64,
    pub g_startpc: u64,
    /// `g.goid`, and `g.waitsince` (nanotime when it began waiting, set by a GC that saw it).
    pub g_goid: u64,
    pub g_waitsince: u64,
    /// `g.trackingSeq`: a byte the scheduler bumps each time the goroutine stops running, so
    /// that one parked where it was at the last read can be told from one that ran since.
    pub g_trackingseq: u64,
    /// Runtimes that do not save the frame pointer of a goroutine entering a system call
    /// (before 1.23): `g.syscallsp`, below which the caller's frame pointer lies.
    pub g_syscallsp: Option<u64>,
    /// Where the global free-goroutine counts are: `gFree.n` (older runtimes, e.g. 1.19), or the
    /// sizes of the two lists `gFree.stack` and `gFree.noStack` (newer ones, e.g. 1.27).
    pub sched_gfree: Vec<u64>,
    pub sched_ngsys: u64,
    /// `p.gFree.n`, or `p.gFree.size` in newer runtimes.
    pub p_gfree_n: u64,
}

impl GoRuntime {
    /// A reader over a byte image of memory at `base`, with made-up globals and layout (like Go
    /// 1.19's on amd64): the globals sit in the image's first 224 bytes, at the offsets
    /// the image tests spell out. For tests and the fuzz target, which feed it garbage.
    pub fn over_image(base: u64, bytes: Vec<u8>) -> Self {
        let at = Addresses {
            allgs: base,
            allglen: base + 16,
            allp: base + 24,
            sched: base + 40,
            wait_reasons: base + 128,
            wait_reasons_len: 4,
            mbuckets: base + 192,
            heap_cycle_words: 4,
            mem_profile_rate: base + 200,
            disable_memory_profiling: Some(base + 208),
            mprof_cycle: Some(base + 216),
        };
        let off = Offsets {
            g_size: 96,
            g_stack_lo: 0,
            g_stack_hi: 8,
            g_sched_pc: 56,
            g_sched_bp: 80,
            g_status: 88,
            g_waitreason: 92,
            g_startpc: 64,
            g_goid: 16,
            g_waitsince: 24,
            g_trackingseq: 93,
            g_syscallsp: None,
            sched_gfree: vec![8, 16],
            sched_ngsys: 24,
            p_gfree_n: 32,
        };
        let functions = vec![(base, "runtime.gcBgMarkWorker".to_string()), (base + 64, "main.main".to_string())];
        Self::from_parts(Box::new(ImageMemory { base, bytes }), at, off, functions.into(), 0)
    }
}
