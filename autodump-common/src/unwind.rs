//! Unwinding without frame pointers: the compact rows the agent compiles from a file's CFI
//! (`.eh_frame` or `.debug_frame`), and the per-process table of where each file is mapped.
//!
//! The rows of every file sit in one array (`UNWIND_ROWS`), each file's rows contiguous and
//! sorted by address; a mapping names its file's row range. A probe finds the mapping of a PC,
//! then the last row at or below the PC's file address, and applies it.

/// How a row finds the canonical frame address (CFA, the caller's stack pointer).
pub mod cfa {
    /// CFA = RSP + offset.
    pub const RSP: u8 = 1;
    /// CFA = RBP + offset.
    pub const RBP: u8 = 2;
    /// A PLT stub: CFA = RSP + 8, plus 8 more past its `push` (x86_64 lazy-binding PLT).
    pub const PLT: u8 = 3;
    /// Stack realignment: CFA = *(RBP + offset) (`DW_OP_breg6 off; DW_OP_deref`).
    pub const DEREF_RBP: u8 = 4;
    /// The return address is undefined: the outermost frame (`_start`, a thread's start).
    pub const END: u8 = 5;
    /// A signal trampoline (`__restore_rt`): the interrupted registers are in the `ucontext`
    /// at RSP.
    pub const SIGNAL: u8 = 6;
    /// No CFI covers this address (a gap between functions): walk by frame pointer.
    pub const NONE: u8 = 7;
    /// CFI the probes cannot follow (the CFA in another register, an unknown expression):
    /// the walk stops here, counted.
    pub const UNSUPPORTED: u8 = 8;
    /// A frame-pointer frame that saved its caller's stack pointer at RBP - 8: the caller's
    /// RBP at RBP, its PC at RBP + 8 (HotSpot's interpreter frames, whose caller may have
    /// extended its frame for the callee's arguments).
    pub const SENDER_SP: u8 = 9;
    /// A frame of a fixed size with no CFI: CFA = RSP + offset, the caller's RBP at CFA - 16,
    /// unless the frame is interrupted in its epilogue (a JIT's compiled methods).
    pub const FIXED: u8 = 10;
    /// The prologue of such a frame (`cfa_offset` its size): where the CFA is depends on the
    /// instruction interrupted; a walk never returns into a prologue (it stops, counted).
    pub const FIXED_PROLOGUE: u8 = 11;
    /// Free space in a JIT's code region when the agent last read it: code compiled since,
    /// whose frame is not known yet. The walk stops here, counted (`Stat::NewCodeStops`), and
    /// the agent reads the region again within `--code-check`.
    pub const NEW_CODE: u8 = 12;
}

/// `UnwindRow::rbp_offset` when the caller's RBP is the same as this frame's (not saved).
pub const RBP_UNCHANGED: i16 = 0;

/// One CFI row: from `pc` (a file virtual address, below 4 GiB) until the next row's `pc`.
/// 16 bytes: a BPF array rounds its values up to 8 bytes anyway.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    pub pc: u32,
    /// For [`cfa::PLT`], the byte of the 16-byte stub from which the CFA is 8 further.
    pub cfa_offset: i32,
    /// Where the caller's RBP is saved, relative to the CFA; [`RBP_UNCHANGED`] if it is not.
    pub rbp_offset: i16,
    /// One of [`cfa`].
    pub cfa_kind: u8,
    pub _pad: [u8; 5],
}

/// Executable mappings tracked per process.
pub const MAX_MAPPINGS: usize = 256;

/// One executable mapping of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappingEntry {
    pub start: u64,
    pub end: u64,
    /// PC - bias = the file's virtual address.
    pub bias: u64,
    /// The file's rows in `UNWIND_ROWS`; `row_count` 0: none (walk by frame pointer), and
    /// `row_start` [`JIT_CODE`] with it: memory no file backs (JIT code).
    pub row_start: u32,
    pub row_count: u32,
}

/// `MappingEntry::row_start` of executable memory no file backs (with `row_count` 0): JIT code,
/// walked by frame pointer, checked to move up the stack.
pub const JIT_CODE: u32 = u32::MAX;

/// Where a process's executable mappings are: `MAPPING_ENTRIES[slot * MAX_MAPPINGS ..][..count]`,
/// sorted by `start`. The agent writes a new table into the process's other slot, then points
/// here, so that a probe never reads a table half written. `version` changes with every table
/// written for the process: a walk remembered under another version is walked again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcMappings {
    pub slot: u32,
    pub count: u32,
    pub version: u32,
    pub reserved: u32,
}

/// Mapping-table slots: two per process.
pub const MAPPING_SLOTS: u32 = 64;

/// A user stack the probes walked themselves: `ips[..len]`, innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnwoundStack {
    /// 64-bit hash of the frames; the map key holds only part of it.
    pub hash: u64,
    pub len: u32,
    /// `END_*` bits: how the walk ended.
    pub end: u32,
    pub ips: [u64; crate::MAX_STACK_DEPTH],
}

/// The walk reached a row that marks the outermost frame.
pub const END_ROOT: u32 = 1;
/// The walk stopped at code no mapped file covers (JIT or anonymous code).
pub const END_UNKNOWN_CODE: u32 = 2;
/// The walk stopped at CFI it cannot follow, or at an unreadable or implausible frame.
pub const END_BROKEN: u32 = 4;
/// The walk hit the frame limit.
pub const END_DEPTH: u32 = 8;

/// A user stack id with this bit set names a stack in the generation's unwound-stack map (its
/// low bits are part of the stack's hash) instead of the kernel's stack map. Below
/// [`crate::OVERFLOW_STACK_ID`], above every id the kernel hands out.
pub const UNWOUND_STACK_ID: u32 = 1 << 29;

/// Stack words a remembered walk may have read (see [`WalkMemo`]); a walk that read more is not
/// remembered.
pub const MEMO_READS: usize = 32;

/// A thread's last user-stack walk for one probe kind (`WALK_MEMOS`, by `tid << 8 | kind`):
/// the registers it started from, each stack word it read and what it held, and the id it was
/// filed under. The walk is a function of those alone (the rows are fixed by the process's
/// mapping-table `version`, the ids by `epoch`), so a walk from the same registers whose words
/// all still hold the same values would take the same steps: its id is reused. Walks through
/// a runtime's frames or JIT code read more than stack words, and are not remembered.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WalkMemo {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub epoch: u32,
    pub version: u32,
    pub id: i32,
    /// The walk's `END_*` bits, counted again on a hit as the walk counted them.
    pub end: u32,
    /// Words read; above [`MEMO_READS`]: too many, or one could not be read (not remembered).
    pub reads: u32,
    /// Nonzero: every address read lies a multiple of 8 bytes from `low` (the words can be
    /// compared in one read of `low..=high`).
    pub aligned: u32,
    /// The lowest and highest address read.
    pub low: u64,
    pub high: u64,
    pub addresses: [u64; MEMO_READS],
    pub values: [u64; MEMO_READS],
}
