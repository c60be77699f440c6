//! The aggregate maps, their two generations, and the small steps every probe shares: filter
//! by target, count a loss, add to a counter. The lowest layer: it imports no other module.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use autodump_common::{
    runtimes::STAT_SLOTS, target_bit, unwind::UnwoundStack, Control, ExitInfo, FaultKey, OffCpuStart, OffCpuTotal,
    StackKey, Stat, WakeKey, OVERFLOW_SHARE, TARGET_BIT_WORDS, TARGET_SLOTS,
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, StackTrace},
};

/// Default map sizes; the agent resizes them before load from its flags.
const STACK_SLOTS: u32 = 8192;
const COUNT_SLOTS: u32 = 16384;
const THREAD_SLOTS: u32 = 16384;
const UNWOUND_SLOTS: u32 = 4096;

// Two generations of every aggregate; `CONTROL.epoch % 2` says which one the probes write.
#[map]
pub static STACKS_0: StackTrace = StackTrace::with_max_entries(STACK_SLOTS, 0);
#[map]
pub static STACKS_1: StackTrace = StackTrace::with_max_entries(STACK_SLOTS, 0);
/// Stacks whose slot in `STACKS_*` held another stack: see `OVERFLOW_STACK_ID`.
#[map]
pub static OVERFLOW_STACKS_0: StackTrace = StackTrace::with_max_entries(STACK_SLOTS / OVERFLOW_SHARE, 0);
#[map]
pub static OVERFLOW_STACKS_1: StackTrace = StackTrace::with_max_entries(STACK_SLOTS / OVERFLOW_SHARE, 0);
#[map]
pub static CPU_COUNTS_0: HashMap<StackKey, u64> = HashMap::with_max_entries(COUNT_SLOTS, 0);
#[map]
pub static CPU_COUNTS_1: HashMap<StackKey, u64> = HashMap::with_max_entries(COUNT_SLOTS, 0);
#[map]
pub static FAULT_COUNTS_0: HashMap<FaultKey, u64> = HashMap::with_max_entries(COUNT_SLOTS, 0);
#[map]
pub static FAULT_COUNTS_1: HashMap<FaultKey, u64> = HashMap::with_max_entries(COUNT_SLOTS, 0);
#[map]
pub static OFFCPU_TOTALS_0: HashMap<StackKey, OffCpuTotal> = HashMap::with_max_entries(COUNT_SLOTS, 0);
#[map]
pub static OFFCPU_TOTALS_1: HashMap<StackKey, OffCpuTotal> = HashMap::with_max_entries(COUNT_SLOTS, 0);
/// Blocked time until woken, by blocked stack and waker (see `wakeup`).
#[map]
pub static WAKEUP_TOTALS_0: HashMap<WakeKey, OffCpuTotal> = HashMap::with_max_entries(COUNT_SLOTS, 0);
#[map]
pub static WAKEUP_TOTALS_1: HashMap<WakeKey, OffCpuTotal> = HashMap::with_max_entries(COUNT_SLOTS, 0);
/// User stacks walked with CFI (`unwind`) by id (`UNWOUND_STACK_ID` | part of the hash).
#[map]
pub static UNWOUND_STACKS_0: HashMap<u32, UnwoundStack> = HashMap::with_max_entries(UNWOUND_SLOTS, 0);
#[map]
pub static UNWOUND_STACKS_1: HashMap<u32, UnwoundStack> = HashMap::with_max_entries(UNWOUND_SLOTS, 0);
/// Off-CPU kernel stack id by (switch flags, user stack id), per generation: see `kernel_stack_for`.
#[map]
pub static KERNEL_STACK_CACHE_0: HashMap<u64, i32> = HashMap::with_max_entries(STACK_SLOTS, 0);
#[map]
pub static KERNEL_STACK_CACHE_1: HashMap<u64, i32> = HashMap::with_max_entries(STACK_SLOTS, 0);

/// Every thread of the target that has switched out since attach, by tid, until it exits:
/// where and when it last switched out (`start_ns` 0 while it runs).
#[map]
pub static OFFCPU_START: HashMap<u32, OffCpuStart> = HashMap::with_max_entries(THREAD_SLOTS, 0);
#[map]
pub static CONTROL: Array<Control> = Array::with_max_entries(1, 0);
/// The watched processes, by tgid; the agent adds them, and a process's last thread removes it
/// as it exits, so a new process that reuses the pid is never recorded by mistake.
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(TARGET_SLOTS, 0);
/// A filter in front of `TARGETS` (see `target_bit`): set by the agent, never cleared by probes.
#[map]
pub static TARGET_BITS: Array<u64> = Array::with_max_entries(TARGET_BIT_WORDS, 0);
/// How each watched process ended, by tgid: written by its last thread's exit, read and
/// removed by the agent.
#[map]
pub static EXITS: HashMap<u32, ExitInfo> = HashMap::with_max_entries(TARGET_SLOTS, 0);
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_SLOTS, 0);

pub struct Generation {
    pub epoch: u32,
    pub stacks: &'static StackTrace,
    pub overflow_stacks: &'static StackTrace,
    pub cpu_counts: &'static HashMap<StackKey, u64>,
    pub fault_counts: &'static HashMap<FaultKey, u64>,
    pub offcpu_totals: &'static HashMap<StackKey, OffCpuTotal>,
    pub wakeup_totals: &'static HashMap<WakeKey, OffCpuTotal>,
    pub kernel_stack_cache: &'static HashMap<u64, i32>,
    pub unwound: &'static HashMap<u32, UnwoundStack>,
}

#[inline(always)]
pub fn generation() -> Generation {
    let epoch = CONTROL.get(0).map_or(0, |c| c.epoch);
    if epoch & 1 == 0 {
        Generation {
            epoch,
            stacks: &STACKS_0,
            overflow_stacks: &OVERFLOW_STACKS_0,
            cpu_counts: &CPU_COUNTS_0,
            fault_counts: &FAULT_COUNTS_0,
            offcpu_totals: &OFFCPU_TOTALS_0,
            wakeup_totals: &WAKEUP_TOTALS_0,
            kernel_stack_cache: &KERNEL_STACK_CACHE_0,
            unwound: &UNWOUND_STACKS_0,
        }
    } else {
        Generation {
            epoch,
            stacks: &STACKS_1,
            overflow_stacks: &OVERFLOW_STACKS_1,
            cpu_counts: &CPU_COUNTS_1,
            fault_counts: &FAULT_COUNTS_1,
            offcpu_totals: &OFFCPU_TOTALS_1,
            wakeup_totals: &WAKEUP_TOTALS_1,
            kernel_stack_cache: &KERNEL_STACK_CACHE_1,
            unwound: &UNWOUND_STACKS_1,
        }
    }
}

/// Adds one to a stat slot; returns true the first time on this CPU, so callers can log once.
#[inline(always)]
pub fn count(stat: Stat) -> bool {
    count_slot(stat as u32)
}

/// Adds one to the stat slot `slot` (a runtime's own slots follow `Stat`'s).
#[inline(always)]
pub fn count_slot(slot: u32) -> bool {
    match STATS.get_ptr_mut(slot) {
        // SAFETY: a valid per-CPU slot; probes do not nest on one CPU.
        Some(slot) => unsafe {
            *slot += 1;
            *slot == 1
        },
        None => false,
    }
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a plain helper call.
    unsafe { bpf_ktime_get_ns() }
}

/// Atomic add into a map value that other CPUs may update at the same time.
///
/// # Safety
/// `dst` must point into a live map value.
#[inline(always)]
pub unsafe fn add(dst: *mut u64, n: u64) {
    // SAFETY: per the contract above.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, n) };
}

/// The entry for `key`, created zeroed if absent: a lookup first, because the key usually exists
/// and a failed insert takes the bucket lock. Several CPUs may create the same key at once, so
/// the insert must not overwrite (`BPF_NOEXIST`). None when the map is full.
#[inline(always)]
pub fn entry<K: Copy, V: Default>(map: &HashMap<K, V>, key: K) -> Option<*mut V> {
    map.get_ptr_mut(key).or_else(|| {
        let _ = map.insert(key, V::default(), BPF_NOEXIST as u64);
        map.get_ptr_mut(key)
    })
}

/// True for the threads of a watched process, and only while it lives: its last thread's exit
/// removes it (the agent may notice the exit only at its next tick). Most events on a host are
/// other processes': an array read and a test answer them.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    let (word, bit) = target_bit(tgid);
    if TARGET_BITS.get(word).is_none_or(|w| *w & bit == 0) {
        return false;
    }
    TARGETS.get_ptr(tgid).is_some()
}
