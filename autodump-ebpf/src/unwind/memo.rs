//! A thread's last walk, reused while nothing it read has changed (see `WalkMemo`). A thread that
//! blocks or wakes another many times a second mostly does so from the same call site, with the
//! same stack below it: re-reading the few words its walk read costs a fraction of the walk
//! (the row searches and the filing).

use core::ffi::c_void;

use autodump_common::unwind::{WalkMemo, MEMO_READS};
use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated},
    macros::map,
    maps::LruHashMap,
};

use super::{Walk, PROC_MAPPINGS};

/// Sized by the agent (`--walk-memo-slots`); least recently used threads are forgotten first.
#[map]
static WALK_MEMOS: LruHashMap<u64, WalkMemo> = LruHashMap::with_max_entries(1, 0);

/// Nonzero: remember walks (the agent's flag; 0 leaves the map unused).
#[no_mangle]
static WALK_MEMO: u32 = 0;

/// A remembered walk whose words lie within this many bytes is checked with one read of them
/// (a few hundred bytes copy faster than a helper call per word), else word by word.
pub(super) const SPAN_BYTES: usize = 1024;

/// `WalkMemo::reads` of a walk that is not remembered.
const UNREMEMBERED: u32 = MEMO_READS as u32 + 1;

#[inline(always)]
fn enabled() -> bool {
    // SAFETY: a read-only global, set before load.
    unsafe { core::ptr::read_volatile(&WALK_MEMO) != 0 }
}

/// A thread's walks are remembered per probe kind and per place it entered the kernel from
/// (PC and stack pointer, folded into 24 bits): a worker that blocks in `epoll_wait`, a
/// `futex` and a `read` in turn keeps one walk for each.
#[inline(always)]
fn key(tid: u32, slot: u32, ip: u64, sp: u64) -> u64 {
    let place = ip ^ sp.rotate_left(17);
    let place = (place ^ place >> 24 ^ place >> 48) & 0xff_ffff;
    (tid as u64) << 32 | (slot as u64) << 24 | place
}

/// Before a walk from the registers in `walk`: the id and end bits of the thread's last walk
/// from the same registers if every word it read still holds the same value. Otherwise starts
/// recording this walk's reads (unless it cannot be remembered: a runtime's process).
#[inline(always)]
pub(super) fn recall(walk: &mut Walk, tid: u32, slot: u32, epoch: u32) -> Option<(i32, u32)> {
    walk.memo.reads = UNREMEMBERED;
    if !enabled() || walk.rt.is_active() {
        return None;
    }
    // SAFETY: the value is copied out at once.
    let version = unsafe { PROC_MAPPINGS.get(walk.rt.tgid) }.map_or(0, |t| t.version);
    // SAFETY: the entry is only read; another CPU can only replace it for this same thread.
    if let Some(last) = unsafe { WALK_MEMOS.get(key(tid, slot, walk.ip, walk.sp)) } {
        if last.ip == walk.ip
            && last.sp == walk.sp
            && last.bp == walk.bp
            && last.epoch == epoch
            && last.version == version
            && still_holds(last, &mut walk.span)
        {
            return Some((last.id, last.end));
        }
    }
    let memo = &mut walk.memo;
    (memo.ip, memo.sp, memo.bp, memo.epoch, memo.version, memo.reads) = (walk.ip, walk.sp, walk.bp, epoch, version, 0);
    None
}

#[inline(always)]
fn still_holds(last: &WalkMemo, span: &mut [u64; SPAN_BYTES / 8]) -> bool {
    let bytes = last.high.wrapping_sub(last.low).wrapping_add(8);
    if last.aligned != 0 && last.reads > 0 && bytes < SPAN_BYTES as u64 {
        let size = bytes as u32 & (SPAN_BYTES as u32 - 1);
        // SAFETY: `size` is below the buffer's; bpf_probe_read_user checks the address.
        let read = unsafe {
            generated::bpf_probe_read_user(span.as_mut_ptr() as *mut c_void, size, last.low as *const c_void)
        };
        if read == 0 {
            return words_hold(last, |i| {
                let word = (last.addresses[i].wrapping_sub(last.low) / 8) as usize;
                span[word & (SPAN_BYTES / 8 - 1)]
            });
        }
    }
    // SAFETY: bpf_probe_read_user checks the address; a fault is an error, not a crash.
    words_hold(last, |i| unsafe { bpf_probe_read_user(last.addresses[i] as *const u64) }.unwrap_or(!last.values[i]))
}

/// Whether each word read holds what it held; `now(i)`: the word at `addresses[i]` now.
#[inline(always)]
fn words_hold(last: &WalkMemo, now: impl Fn(usize) -> u64) -> bool {
    for i in 0..MEMO_READS {
        if i as u32 >= last.reads {
            return true;
        }
        // The index through a volatile load, then masked: the compiler stepped a pointer along
        // the array instead, and 6.1's verifier did not tie it to the loop's bound.
        let i = opaque(i) & (MEMO_READS - 1);
        if now(i) != last.values[i] {
            return false;
        }
    }
    true
}

/// `i`, as a value the compiler cannot see through.
#[inline(always)]
fn opaque(i: usize) -> usize {
    let slot = i;
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&slot) }
}

/// A stack word the walk read (None: it could not be read).
#[inline(always)]
pub(super) fn record(memo: &mut WalkMemo, address: u64, value: Option<u64>) {
    let i = memo.reads as usize;
    match value {
        Some(value) if i < MEMO_READS => {
            if i == 0 {
                (memo.low, memo.high, memo.aligned) = (address, address, 1);
            } else {
                memo.low = memo.low.min(address);
                memo.high = memo.high.max(address);
                if (address ^ memo.low) & 7 != 0 {
                    memo.aligned = 0;
                }
            }
            memo.addresses[i] = address;
            memo.values[i] = value;
            memo.reads += 1;
        }
        _ => memo.reads = UNREMEMBERED,
    }
}

/// The walk read more than stack words (JIT code): it is not remembered.
#[inline(always)]
pub(super) fn forget(memo: &mut WalkMemo) {
    memo.reads = UNREMEMBERED;
}

/// After the walk was filed under `id`: remembered for the thread's next one.
#[inline(always)]
pub(super) fn remember(walk: &mut Walk, tid: u32, slot: u32, id: i32) {
    if walk.memo.reads > MEMO_READS as u32 || id < 0 {
        return;
    }
    walk.memo.id = id;
    walk.memo.end = walk.stack.end;
    // A full map forgets its least recently used walk. The key is the walk's start (the walk
    // itself has moved on).
    // By reference: a copy of the memo (560 bytes) would not fit on the BPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let _ = WALK_MEMOS.insert(key(tid, slot, walk.memo.ip, walk.memo.sp), &walk.memo, 0);
}
