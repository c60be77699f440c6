//! Language runtimes in user stacks: a walk that meets a runtime's interpreter emits that
//! runtime's own frames (a code object and an instruction, say) instead of addresses, each
//! marked by its frame kind in the entry's top bits. Each runtime has its own module here (what
//! its probe module and its agent folder share) and a kind number below.
//!
//! A native address has kind 0: user addresses are below 2^48, so the top bits are free.

pub mod hotspot;
pub mod python;
pub mod ruby;

/// Frame kinds: one per runtime whose probe module emits frames. Room for 15.
pub mod kind {
    pub const NATIVE: u8 = 0;
    pub const PYTHON: u8 = 1;
    pub const RUBY: u8 = 2;
    pub const HOTSPOT: u8 = 3;
    /// Kinds a stack entry can carry (4 bits).
    pub const COUNT: u8 = 16;
}

/// The entry's kind sits in its top `64 - KIND_SHIFT` bits; the rest is the runtime's payload.
pub const KIND_SHIFT: u32 = 60;
pub const PAYLOAD_MASK: u64 = (1 << KIND_SHIFT) - 1;

/// A stack entry of kind `kind` carrying `payload` (cut to its 60 bits).
pub const fn runtime_frame(kind: u8, payload: u64) -> u64 {
    ((kind as u64) << KIND_SHIFT) | (payload & PAYLOAD_MASK)
}

/// The entry that marks where a walk's trailing frames of runtime `kind` start: frames no
/// interpreter frame took, which the walk puts after its root (see the probes' `runtimes::trailing`)
/// and the agent puts back.
pub const fn trailing_mark(kind: u8) -> u64 {
    runtime_frame(kind, 0)
}

/// The frame kind of a user stack entry: [`kind::NATIVE`] for an address.
pub const fn frame_kind(entry: u64) -> u8 {
    (entry >> KIND_SHIFT) as u8
}

/// A runtime frame's payload.
pub const fn payload(entry: u64) -> u64 {
    entry & PAYLOAD_MASK
}

/// Pointers in payloads are stored without their three low bits (every object a frame names is
/// 8-byte aligned): 45 bits hold a 48-bit address.
pub const POINTER_BITS: u32 = 45;
pub const POINTER_MASK: u64 = (1 << POINTER_BITS) - 1;

/// `pointer` as a payload's low bits.
pub const fn pack_pointer(pointer: u64) -> u64 {
    (pointer >> 3) & POINTER_MASK
}

/// The pointer a payload's low bits hold.
pub const fn unpack_pointer(payload: u64) -> u64 {
    (payload & POINTER_MASK) << 3
}

/// Words of a runtime's own description of a process in [`RuntimeProc`].
pub const RUNTIME_WORDS: usize = 14;

/// A process whose walks emit a runtime's frames (the `RUNTIME_PROCS` map, by tgid): which
/// runtime, where its interpreter's code is (a walk at a PC in there hands over to the runtime
/// before that native frame), and the runtime's own layout of what it reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeProc {
    /// One of [`kind`].
    pub kind: u32,
    pub _pad: u32,
    /// The interpreter's function, [start, end), and a second range (its cold part), 0 if none.
    pub code: [u64; 4],
    /// The runtime's own layout (`python::PyProc`, `ruby::RubyProc`), read through [`RuntimeProc::of`].
    pub words: [u64; RUNTIME_WORDS],
}

impl RuntimeProc {
    /// A process of runtime `kind` whose interpreter runs at `code`, described by `own`.
    pub fn new<T: Copy>(kind: u8, code: [u64; 4], own: &T) -> Self {
        let mut proc = RuntimeProc { kind: kind as u32, code, ..RuntimeProc::default() };
        let size = core::mem::size_of::<T>();
        assert!(size <= RUNTIME_WORDS * 8 && core::mem::align_of::<T>() <= 8, "a runtime's layout fits the words");
        // SAFETY: `T` fits within `words` (checked above) and is plain data; the copy is bytewise.
        unsafe {
            core::ptr::copy_nonoverlapping(own as *const T as *const u8, proc.words.as_mut_ptr() as *mut u8, size)
        };
        proc
    }

    /// The runtime's own layout of this process.
    ///
    /// # Safety
    /// `T` must be the type this process was made with ([`RuntimeProc::new`]), as `kind` says.
    #[inline(always)]
    pub unsafe fn of<T: Copy>(&self) -> &T {
        // SAFETY: per the contract, `words` holds a `T`, 8-byte aligned.
        unsafe { &*(self.words.as_ptr() as *const T) }
    }
}

/// Probe counters each runtime has, by slot after the fixed ones (`Stat::COUNT`): the frames its
/// walks emitted, and walks that met its interpreter but could not read its thread.
pub const RUNTIME_STATS: u32 = 2;
pub const STAT_FRAMES: u32 = 0;
pub const STAT_THREAD_MISSES: u32 = 1;

/// The `STATS` slot of a runtime's counter.
#[inline(always)]
pub const fn stat_slot(kind: u8, which: u32) -> u32 {
    crate::Stat::COUNT + kind as u32 * RUNTIME_STATS + which
}

/// Every `STATS` slot: the fixed ones and each kind's.
pub const STAT_SLOTS: u32 = crate::Stat::COUNT + kind::COUNT as u32 * RUNTIME_STATS;
