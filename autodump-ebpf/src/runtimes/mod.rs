//! Language runtimes in a CFI walk. When the walk reaches a native frame in a runtime's
//! interpreter (the code ranges its `RUNTIME_PROCS` entry names), it first emits the runtime's
//! own frames that native frame runs, innermost first, one per step, then carries on with the
//! native frame itself. Each runtime is a module with one step function; `next` dispatches on
//! the process's frame kind. Only addresses and offsets go into the stack: the agent names them.

use autodump_common::runtimes::{kind, stat_slot, trailing_mark, RuntimeProc, STAT_FRAMES};
use aya_ebpf::{helpers::generated::bpf_probe_read_kernel, macros::map, maps::HashMap};

use crate::maps::count_slot;

mod hotspot;
mod python;
mod ruby;

const PROCESS_SLOTS: u32 = 64;
const THREAD_SLOTS: u32 = 16384;

/// Processes whose walks emit a runtime's frames, by tgid.
#[map]
pub static RUNTIME_PROCS: HashMap<u32, RuntimeProc> = HashMap::with_max_entries(PROCESS_SLOTS, 0);
/// A word per thread the runtime's step starts from (CPython's thread state), by
/// tgid << 32 | tid: listed by the agent, and found by the step itself when missing.
#[map]
pub static RUNTIME_THREADS: HashMap<u64, u64> = HashMap::with_max_entries(THREAD_SLOTS, 0);

/// Where a walk is in the current native frame's runtime frames.
const IDLE: u32 = 0;
const EMITTING: u32 = 1;
/// This native frame's runtime frames are all out: the native step follows, then back to `IDLE`.
const DONE: u32 = 2;

/// The runtime part of one walk.
#[repr(C)]
pub struct RuntimeWalk {
    pub proc: RuntimeProc,
    pub tgid: u32,
    /// Nonzero when the process runs a runtime.
    active: u32,
    state: u32,
    /// Nonzero once the runtime has found where its frames start (at the first interpreter frame).
    cursor_ready: u32,
    /// At the root: 1 while the runtime's trailing frames are emitted, 2 once one was.
    trailing: u32,
    /// A trailing frame held back one step, while its mark is pushed (one entry a step).
    held: u64,
    /// The runtime's place in its frames, and a bound it keeps (its own meaning).
    pub cursor: u64,
    pub bound: u64,
    /// The frame pointer of the native frame being walked.
    pub frame: u64,
}

/// What a runtime's step gives.
pub enum Step {
    /// A frame; more may follow before this native frame.
    Frame(u64),
    /// This native frame's last runtime frame.
    Last(u64),
    /// Nothing to emit this step (a frame without code), more may follow.
    Skip,
    /// No more frames before this native frame.
    Done,
}

impl RuntimeWalk {
    /// The process runs a runtime whose frames this walk follows.
    #[inline(always)]
    pub fn is_active(&self) -> bool {
        self.active != 0
    }
}

/// Prepares `rt` for a walk of process `tgid`: whether it runs a runtime, and which.
#[inline(always)]
pub fn start(rt: &mut RuntimeWalk, tgid: u32) {
    rt.tgid = tgid;
    rt.state = IDLE;
    rt.cursor_ready = 0;
    rt.trailing = 0;
    rt.held = 0;
    // SAFETY: the value is copied out while this program runs.
    match unsafe { RUNTIME_PROCS.get(tgid) } {
        Some(proc) => {
            // Copied by the helper: as an assignment, the compiler may call its own memmove
            // with a map value as the argument, which 6.1's verifier refuses ("reg type
            // unsupported for arg#0").
            // SAFETY: both are `RuntimeProc`s in map memory, of the size given.
            let copied = unsafe {
                bpf_probe_read_kernel(
                    (&raw mut rt.proc).cast(),
                    core::mem::size_of::<RuntimeProc>() as u32,
                    (proc as *const RuntimeProc).cast(),
                )
            };
            rt.active = u32::from(copied == 0);
        }
        None => rt.active = 0,
    }
}

/// Before the native frame at `pc`: the runtime's next frame to emit there, `Some(None)` for a
/// step that emits nothing, or None to go on with the native frame.
#[inline(always)]
pub fn next(rt: &mut RuntimeWalk, pc: u64, frame: u64) -> Option<Option<u64>> {
    if rt.active == 0 {
        return None;
    }
    rt.frame = frame;
    if rt.state == IDLE {
        let c = &rt.proc.code;
        let in_code = (pc >= c[0] && pc < c[1]) || (pc >= c[2] && pc < c[3]);
        if !in_code {
            return None;
        }
        rt.state = EMITTING;
    }
    if rt.state != EMITTING {
        return None;
    }
    let kind = rt.proc.kind as u8;
    let first = rt.cursor_ready == 0;
    rt.cursor_ready = 1;
    let step = match kind {
        kind::PYTHON => python::step(rt, first),
        kind::RUBY => ruby::step(rt, first),
        kind::HOTSPOT => hotspot::step(rt),
        _ => Step::Done,
    };
    let entry = match step {
        Step::Frame(entry) => entry,
        Step::Last(entry) => {
            rt.state = DONE;
            entry
        }
        Step::Skip => return Some(None),
        Step::Done => {
            rt.state = DONE;
            return None;
        }
    };
    count_slot(stat_slot(kind, STAT_FRAMES));
    Some(Some(entry))
}

/// Whether runtime `kind` can have frames left at a walk's root: CRuby pushes a block's frame
/// before its interpreter loop runs it (calling a block from C), and a walk then has one more
/// group of Ruby frames than interpreter frames: each group is emitted one interpreter frame
/// out, and the outermost is left over.
#[inline(always)]
fn trails(kind: u8) -> bool {
    kind == kind::RUBY
}

/// At the walk's root: whether the runtime may have frames left (see [`trails`]).
#[inline(always)]
pub fn at_root(rt: &mut RuntimeWalk) -> bool {
    if rt.active == 0 || rt.cursor_ready == 0 || rt.cursor == 0 || !trails(rt.proc.kind as u8) {
        return false;
    }
    rt.trailing = 1;
    rt.state = EMITTING;
    true
}

/// After the root: the next entry of the runtime's frames left over, `Some(None)` for a step that
/// emits nothing, None when none are left. The first is [`trailing_mark`], which tells the agent
/// to put every group back one interpreter frame in, the innermost at the top.
#[inline(always)]
pub fn trailing(rt: &mut RuntimeWalk) -> Option<Option<u64>> {
    if rt.held != 0 {
        let held = rt.held;
        rt.held = 0;
        return Some(Some(held));
    }
    let Some(entry) = next(rt, 0, 0)? else { return Some(None) };
    if rt.trailing == 1 {
        rt.trailing = 2;
        rt.held = entry;
        return Some(Some(trailing_mark(rt.proc.kind as u8)));
    }
    Some(Some(entry))
}

/// Whether the runtime's frames just emitted stand for the native frame they run in (a Java
/// frame for the interpreter's code): the walk then steps past that frame without keeping it.
#[inline(always)]
pub fn takes_native(rt: &RuntimeWalk) -> bool {
    rt.active != 0 && rt.state == DONE && rt.proc.kind as u8 == kind::HOTSPOT
}

/// The native frame after the runtime's frames was walked: the next interpreter frame starts
/// afresh.
#[inline(always)]
pub fn native_frame_done(rt: &mut RuntimeWalk) {
    if rt.state == DONE {
        rt.state = IDLE;
    }
}
