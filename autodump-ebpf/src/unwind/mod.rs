//! User stacks walked with CFI rows, for code built without frame pointers.
//!
//! The agent compiles each mapped file's `.eh_frame` into rows (`UNWIND_ROWS`) and lists each
//! process's executable mappings (`PROC_MAPPINGS`). Starting from the registers the thread left
//! user mode with, each step finds the PC's mapping and row, computes the caller's stack pointer
//! (the CFA), and reads the return address below it; where no row covers a PC the step follows
//! the frame pointer instead (Go code, gaps). The walk runs under `bpf_loop` (5.17+), one
//! callback per frame, so the verifier checks one frame, not a hundred; programs built on this
//! are only loaded on kernels that have it.
//!
//! The walked stack is hashed and filed once per generation in `UNWOUND_STACKS_*`, so that the
//! probes still count per stack in the kernel and only distinct stacks reach the agent.

use core::ffi::c_void;

use autodump_common::{
    unwind::{
        cfa, MappingEntry, ProcMappings, UnwindRow, UnwoundStack, WalkMemo, END_BROKEN, END_DEPTH, END_ROOT,
        END_UNKNOWN_CODE, MAPPING_SLOTS, MAX_MAPPINGS, RBP_UNCHANGED,
    },
    Stat, MAX_STACK_DEPTH,
};
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_loop, bpf_task_pt_regs},
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};

use crate::{
    maps::{count, Generation},
    runtimes::{self, RuntimeWalk},
};

mod filing;
mod fixed;
mod jit;
mod lookup;
mod memo;
use filing::{count_walk, file};
use lookup::{find_row, Found};

/// Default sizes; the agent sizes the rows to the files it loads, and the rest from its flags.
const ROW_SLOTS: u32 = 1;
const PROCESS_SLOTS: u32 = MAPPING_SLOTS / 2;

/// Every file's rows, each file's contiguous and sorted by `pc`. Filled by the agent through
/// mmap, so that loading a large file's table is a copy, not a syscall per row.
#[map]
pub static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(ROW_SLOTS, BPF_F_MMAPABLE);
/// Where each tgid's executable mappings are in `MAPPING_ENTRIES`.
#[map]
pub static PROC_MAPPINGS: HashMap<u32, ProcMappings> = HashMap::with_max_entries(PROCESS_SLOTS, 0);
/// Mapping tables, `MAX_MAPPINGS` entries per slot. Read by index through the map, not as one
/// large value: the verifier then need not track the binary search's bounds precisely, and
/// prunes its paths.
#[map]
pub static MAPPING_ENTRIES: Array<MappingEntry> = Array::with_max_entries(MAPPING_SLOTS * MAX_MAPPINGS as u32, 0);

/// One walk in progress per CPU and per probe kind (a sample never interrupts a switch, which
/// runs with interrupts off, nor a fault's probe, which runs as a perf event too; they are kept
/// apart anyway).
#[map]
pub(super) static WALKS: PerCpuArray<Walk> = PerCpuArray::with_max_entries(4, 0);

/// The walk slot of each probe kind.
pub const WALK_ON_CPU: u32 = 0;
pub const WALK_SWITCH: u32 = 1;
pub const WALK_FAULT: u32 = 2;
pub const WALK_WAKE: u32 = 3;

/// Offsets in x86_64's `struct pt_regs`.
pub(crate) const PT_REGS_BP: usize = 32;
pub(crate) const PT_REGS_IP: usize = 128;
pub(crate) const PT_REGS_SP: usize = 152;
/// Offsets from RSP in `__restore_rt` of the interrupted RBP, RSP and RIP: the `ucontext`'s
/// `uc_mcontext` begins 40 bytes in, and holds r8-r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip.
const SIGFRAME_BP: u64 = 40 + 10 * 8;
const SIGFRAME_SP: u64 = 40 + 15 * 8;
const SIGFRAME_IP: u64 = 40 + 16 * 8;

#[repr(C)]
pub(super) struct Walk {
    ip: u64,
    sp: u64,
    bp: u64,
    /// Nonzero: `ip` is an interrupted PC (after a signal frame), not a return address.
    exact_ip: u32,
    /// Nonzero: `ip` was read by following the frame pointer.
    from_frame_pointer: u32,
    /// A binary search in progress (see `first_above`): its bounds, its key, and whether a key
    /// could not be read.
    pub(super) lo: u32,
    pub(super) hi: u32,
    pub(super) search_target: u64,
    pub(super) search_failed: u32,
    /// This walk's slot in `WALKS`, for the search steps.
    pub(super) slot: u32,
    /// A language runtime's frames (see `runtimes`), and the process (`rt.tgid`).
    pub(super) rt: RuntimeWalk,
    stack: UnwoundStack,
    /// What this walk read, to be remembered for the thread's next (see `memo`).
    memo: WalkMemo,
    /// The words a remembered walk read, re-read at once.
    span: [u64; memo::SPAN_BYTES / 8],
}

/// Walks the current thread's user stack and files it in this generation; returns its id, or a
/// negative errno when it could not be filed (counted). A switch's or a wake-up's walk is
/// answered from the thread's last one when nothing it read has changed (`memo`).
#[inline(always)]
pub fn user_stack_id(gen: &Generation, slot: u32) -> i32 {
    let Some(walk) = WALKS.get_ptr_mut(slot) else {
        return -1;
    };
    // SAFETY: this CPU's slot; the probe that owns it cannot run twice at once on one CPU.
    let walk = unsafe { &mut *walk };
    if !start(walk) {
        return -14;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let remembers = slot == WALK_SWITCH || slot == WALK_WAKE;
    if remembers {
        if let Some((id, end)) = memo::recall(walk, tid, slot, gen.epoch) {
            count(Stat::WalkMemoHits);
            count_walk(end);
            return id;
        }
    } else {
        memo::forget(&mut walk.memo);
    }
    walk.slot = slot;
    let mut slot_arg = slot;
    // SAFETY: `step` is a BPF subprogram taking (index, ctx) and returning 0 or 1, as bpf_loop
    // requires; `slot_arg` lives on this stack for the whole call.
    unsafe {
        bpf_loop(MAX_STACK_DEPTH as u32, step as *const () as *mut c_void, &raw mut slot_arg as *mut c_void, 0);
    }
    count_walk(walk.stack.end);
    let id = file(gen, &walk.stack);
    if remembers {
        memo::remember(walk, tid, slot, id);
    }
    id
}

/// Starts a walk from the registers the current thread entered the kernel with.
#[inline(always)]
fn start(walk: &mut Walk) -> bool {
    // SAFETY: plain helper calls; `regs` is the current task's saved user registers, read
    // with bpf_probe_read_kernel.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        let read = |offset: usize| bpf_probe_read_kernel(regs.add(offset) as *const u64);
        let (Ok(ip), Ok(sp), Ok(bp)) = (read(PT_REGS_IP), read(PT_REGS_SP), read(PT_REGS_BP)) else {
            return false;
        };
        walk.ip = ip;
        walk.sp = sp;
        walk.bp = bp;
    }
    walk.exact_ip = 1;
    walk.from_frame_pointer = 0;
    walk.stack.hash = 0xcbf2_9ce4_8422_2325;
    walk.stack.len = 0;
    walk.stack.end = 0;
    runtimes::start(&mut walk.rt, (bpf_get_current_pid_tgid() >> 32) as u32);
    true
}

/// One frame: record the PC, then move to the caller. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is `slot_arg` of `user_stack_id`, on the caller's stack.
    let slot = unsafe { *(ctx as *const u32) };
    let Some(walk) = WALKS.get_ptr_mut(slot) else {
        return 1;
    };
    // SAFETY: as in `user_stack_id`.
    let walk = unsafe { &mut *walk };
    let len = walk.stack.len as usize;
    if len >= MAX_STACK_DEPTH {
        walk.stack.end |= END_DEPTH;
        return 1;
    }
    if walk.stack.end & END_ROOT != 0 {
        return trailing(walk, len);
    }
    // A return address points after the call, possibly past the caller's last instruction.
    let pc = if walk.exact_ip != 0 { walk.ip } else { walk.ip.wrapping_sub(1) };
    match runtimes::next(&mut walk.rt, pc, walk.bp) {
        Some(Some(frame)) => {
            push(walk, len, frame);
            return 0;
        }
        Some(None) => return 0,
        None => {}
    }
    let interrupted = walk.exact_ip != 0;
    walk.exact_ip = 0;
    let found = find_row(walk, pc);
    if let Found::NoMapping = found {
        if walk.from_frame_pointer != 0 {
            // The end of a frame-pointer chain (Go's goroutines end so): its last word is no
            // return address. Not a frame.
            return 1;
        }
        // Code no file maps, reached from real unwind information (or sampled in): JIT or
        // anonymous code. Kept as the last frame, and counted.
        walk.stack.end |= END_UNKNOWN_CODE;
    }
    if !runtimes::takes_native(&walk.rt) {
        push(walk, len, walk.ip);
    }
    runtimes::native_frame_done(&mut walk.rt);
    match caller(walk, found, interrupted) {
        Some(()) if walk.ip != 0 => 0,
        Some(()) => {
            walk.stack.end |= END_ROOT;
            i64::from(!runtimes::at_root(&mut walk.rt))
        }
        None if walk.stack.end & END_ROOT != 0 => i64::from(!runtimes::at_root(&mut walk.rt)),
        None => 1,
    }
}

/// Past the root: a runtime's frames left over (see `runtimes::trailing`), one entry a step.
#[inline(always)]
fn trailing(walk: &mut Walk, len: usize) -> i64 {
    match runtimes::trailing(&mut walk.rt) {
        Some(Some(entry)) => {
            push(walk, len, entry);
            0
        }
        Some(None) => 0,
        None => 1,
    }
}

#[inline(always)]
fn push(walk: &mut Walk, len: usize, entry: u64) {
    if len < MAX_STACK_DEPTH {
        walk.stack.ips[len] = entry;
    }
    walk.stack.len = len as u32 + 1;
    walk.stack.hash = (walk.stack.hash ^ entry).wrapping_mul(0x0100_0000_01b3);
}

/// Moves `walk` to the caller of the frame at `pc`; None ends the walk (with `end` set).
#[inline(always)]
fn caller(walk: &mut Walk, found: Found, interrupted: bool) -> Option<()> {
    let mut row = match found {
        Found::Row(row) => row,
        Found::NoRow => UnwindRow { cfa_kind: cfa::NONE, ..UnwindRow::default() },
        Found::NoMapping => return None,
        Found::Jit => return jit::jit_caller(walk),
    };
    walk.from_frame_pointer = u32::from(row.cfa_kind == cfa::NONE);
    if row.cfa_kind == cfa::FIXED || row.cfa_kind == cfa::FIXED_PROLOGUE {
        let (offset, rbp_saved) = if row.cfa_kind == cfa::FIXED {
            fixed::body(walk.ip, row.cfa_offset, interrupted)
        } else {
            fixed::prologue(walk.ip, row.cfa_offset, interrupted).unwrap_or((0, false))
        };
        row.cfa_kind = if offset == 0 { cfa::UNSUPPORTED } else { cfa::RSP };
        row.cfa_offset = offset as i32;
        row.rbp_offset = if rbp_saved { -16 } else { RBP_UNCHANGED };
    }
    let broken = |walk: &mut Walk| {
        walk.stack.end |= END_BROKEN;
        None
    };
    let cfa = match row.cfa_kind {
        cfa::RSP => walk.sp.wrapping_add(row.cfa_offset as i64 as u64),
        cfa::RBP => walk.bp.wrapping_add(row.cfa_offset as i64 as u64),
        // Past the stub's `push` (from byte `cfa_offset` of its 16) the CFA is 8 further.
        cfa::PLT => walk.sp + 8 + if walk.ip & 15 >= row.cfa_offset as u64 { 8 } else { 0 },
        cfa::DEREF_RBP => walk.read(walk.bp.wrapping_add(row.cfa_offset as i64 as u64))?,
        cfa::END => {
            walk.stack.end |= END_ROOT;
            return None;
        }
        cfa::SIGNAL => {
            // One read at a time, each checked: read as a tuple, 6.1's verifier found a path on
            // which a register held no value (newer ones prune it).
            let frame = walk.sp;
            let Some(bp) = walk.read(frame + SIGFRAME_BP) else { return broken(walk) };
            let Some(sp) = walk.read(frame + SIGFRAME_SP) else { return broken(walk) };
            let Some(ip) = walk.read(frame + SIGFRAME_IP) else { return broken(walk) };
            walk.bp = bp;
            walk.sp = sp;
            walk.ip = ip;
            walk.exact_ip = 1;
            return Some(());
        }
        cfa::SENDER_SP => return jit::sender_sp_caller(walk),
        cfa::NEW_CODE => {
            count(Stat::NewCodeStops);
            return broken(walk);
        }
        cfa::NONE => {
            count(Stat::UnwindFramePointerFrames);
            // The frame pointer chain: [rbp] is the caller's rbp, [rbp + 8] the return address.
            if walk.bp == 0 {
                walk.stack.end |= END_ROOT;
                return None;
            }
            let Some(caller_bp) = walk.read(walk.bp) else {
                return broken(walk);
            };
            // No check that the caller's frame is above this one: frame pointers cross stacks
            // (Go's cgo calls run on the system stack); the depth limit bounds a loop.
            let cfa = walk.bp + 16;
            let Some(ra) = walk.read(cfa - 8) else {
                return broken(walk);
            };
            walk.bp = caller_bp;
            walk.sp = cfa;
            walk.ip = ra;
            return Some(());
        }
        _ => return broken(walk),
    };
    // The stack grows down: the caller's frame is above this one.
    if cfa <= walk.sp {
        return broken(walk);
    }
    let Some(ra) = walk.read(cfa - 8) else {
        return broken(walk);
    };
    if row.rbp_offset != RBP_UNCHANGED {
        let Some(bp) = walk.read(cfa.wrapping_add(row.rbp_offset as i64 as u64)) else {
            return broken(walk);
        };
        walk.bp = bp;
    }
    walk.sp = cfa;
    walk.ip = ra;
    Some(())
}

#[inline(always)]
fn read(address: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the address; a fault is an error, not a crash.
    unsafe { bpf_probe_read_user(address as *const u64).ok() }
}

impl Walk {
    /// A stack word, recorded for the memo.
    #[inline(always)]
    fn read(&mut self, address: u64) -> Option<u64> {
        let value = read(address);
        memo::record(&mut self.memo, address, value);
        value
    }
}
