//! Finding a PC's row: its mapping in the process's table, then the last row of that file at or
//! below its address. Both are binary searches whose steps are `bpf_loop` iterations over state
//! in the walk's map memory, so that the verifier checks each small step once.

use core::ffi::c_void;

use autodump_common::unwind::{UnwindRow, MAX_MAPPINGS};
use aya_ebpf::helpers::generated::bpf_loop;

use super::{Walk, MAPPING_ENTRIES, PROC_MAPPINGS, UNWIND_ROWS, WALKS};

pub(super) enum Found {
    Row(UnwindRow),
    /// A mapped file, but no row covers the PC: walk by frame pointer.
    NoRow,
    /// No file maps the PC.
    NoMapping,
}

/// The mapping of `pc` in the process's table, then the last row at or below its file address.
#[inline(always)]
pub(super) fn find_row(walk: &mut Walk, pc: u64) -> Found {
    // SAFETY: the value is only read, while this program runs.
    let Some(table) = (unsafe { PROC_MAPPINGS.get(walk.tgid) }) else {
        return Found::NoRow;
    };
    let first = table.slot * MAX_MAPPINGS as u32;
    let end = first + table.count.min(MAX_MAPPINGS as u32);
    let Some(above) = first_above(walk, Table::Mappings, first, end, pc) else {
        return Found::NoMapping;
    };
    if above == first {
        return Found::NoMapping;
    }
    let Some(mapping) = MAPPING_ENTRIES.get(above - 1) else {
        return Found::NoMapping;
    };
    if pc >= mapping.end {
        return Found::NoMapping;
    }
    let address = pc.wrapping_sub(mapping.bias);
    if mapping.row_count == 0 || address > u32::MAX as u64 {
        return Found::NoRow;
    }
    let (first, end) = (mapping.row_start, mapping.row_start + mapping.row_count);
    match first_above(walk, Table::Rows, first, end, address) {
        Some(above) if above > first => UNWIND_ROWS.get(above - 1).map_or(Found::NoRow, |row| Found::Row(*row)),
        _ => Found::NoRow,
    }
}

/// The sorted tables a search reads.
enum Table {
    /// `MAPPING_ENTRIES`, by start address.
    Mappings,
    /// `UNWIND_ROWS`, by address.
    Rows,
}

/// Binary search of `[lo, hi)` in `table` for the first index whose key is above `target` (at
/// most 2^24 entries), one halving per `bpf_loop` iteration. Its state lives in the walk's map
/// memory, not in registers: the verifier checks one small step, once, whatever the bounds. None
/// if a key cannot be read.
#[inline(always)]
fn first_above(walk: &mut Walk, table: Table, lo: u32, hi: u32, target: u64) -> Option<u32> {
    walk.lo = lo;
    walk.hi = hi;
    walk.search_target = target;
    walk.search_failed = 0;
    let mut slot = walk.slot;
    let ctx = &raw mut slot as *mut c_void;
    // SAFETY: each step is a BPF subprogram taking (index, ctx) and returning 0 or 1; `slot`
    // lives on this stack for the whole call.
    unsafe {
        match table {
            Table::Mappings => bpf_loop(24, search_mappings as *const () as *mut c_void, ctx, 0),
            Table::Rows => bpf_loop(24, search_rows as *const () as *mut c_void, ctx, 0),
        };
    }
    // SAFETY: volatile, so that the loads come after the steps' stores.
    let (failed, lo) = unsafe { (core::ptr::read_volatile(&walk.search_failed), core::ptr::read_volatile(&walk.lo)) };
    (failed == 0).then_some(lo)
}

#[inline(never)]
extern "C" fn search_mappings(_index: u64, ctx: *mut c_void) -> i64 {
    search_step(ctx, |i| MAPPING_ENTRIES.get(i).map(|m| m.start))
}

#[inline(never)]
extern "C" fn search_rows(_index: u64, ctx: *mut c_void) -> i64 {
    search_step(ctx, |i| UNWIND_ROWS.get(i).map(|r| u64::from(r.pc)))
}

/// One halving of the search in the walk of slot `*ctx`; 1 ends the loop.
#[inline(always)]
fn search_step(ctx: *mut c_void, key_at: impl Fn(u32) -> Option<u64>) -> i64 {
    // SAFETY: `ctx` is `slot` of `first_above`, on the caller's stack.
    let slot = unsafe { *(ctx as *const u32) };
    let Some(walk) = WALKS.get_ptr_mut(slot) else {
        return 1;
    };
    // SAFETY: as in `user_stack_id`.
    let walk = unsafe { &mut *walk };
    let (lo, hi) = (walk.lo, walk.hi);
    if lo >= hi {
        return 1;
    }
    let mid = lo + (hi - lo) / 2;
    match key_at(mid) {
        Some(key) if key <= walk.search_target => walk.lo = mid + 1,
        Some(_) => walk.hi = mid,
        None => {
            walk.search_failed = 1;
            return 1;
        }
    }
    0
}
