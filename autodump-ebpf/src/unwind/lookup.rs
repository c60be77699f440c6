//! Finding a PC's row: its mapping in the process's table, then the last row of that file at or
//! below its address. Both are binary searches over bounds kept in the walk's map memory, so that
//! the verifier prunes every step to one state (with the bounds in registers, Linux 7.2's verifier
//! followed every path and took over 30 s to load the probes in the kernel matrix).

use autodump_common::unwind::{UnwindRow, JIT_CODE, MAX_MAPPINGS};

use super::{Walk, MAPPING_ENTRIES, PROC_MAPPINGS, UNWIND_ROWS};

pub(super) enum Found {
    Row(UnwindRow),
    /// A mapped file, but no row covers the PC: walk by frame pointer.
    NoRow,
    /// No file maps the PC.
    NoMapping,
    /// Executable memory no file backs (JIT code): walk by frame pointer, checked.
    Jit,
}

/// The mapping of `pc` in the process's table, then the last row at or below its file address.
#[inline(always)]
pub(super) fn find_row(walk: &mut Walk, pc: u64) -> Found {
    // SAFETY: the value is only read, while this program runs.
    let Some(table) = (unsafe { PROC_MAPPINGS.get(walk.rt.tgid) }) else {
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
    if mapping.row_count == 0 && mapping.row_start == JIT_CODE {
        return Found::Jit;
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
/// most 2^24 entries). Its bounds live in the walk's map memory, not in registers: every step then
/// ends in one verifier state whichever half it kept, so the verifier checks 24 small steps, not
/// every path. None if a key cannot be read.
#[inline(always)]
fn first_above(walk: &mut Walk, table: Table, lo: u32, hi: u32, target: u64) -> Option<u32> {
    walk.lo = lo;
    walk.hi = hi;
    walk.search_target = target;
    walk.search_failed = 0;
    for _ in 0..24 {
        let done = match table {
            Table::Mappings => search_step(walk, |i| MAPPING_ENTRIES.get(i).map(|m| m.start)),
            Table::Rows => search_step(walk, |i| UNWIND_ROWS.get(i).map(|r| u64::from(r.pc))),
        };
        if done {
            break;
        }
    }
    // SAFETY: volatile, so that the loads come after the steps' stores.
    let (failed, lo) = unsafe { (core::ptr::read_volatile(&walk.search_failed), core::ptr::read_volatile(&walk.lo)) };
    (failed == 0).then_some(lo)
}

/// One halving of the search; true when it is over. Bounds are read and written through
/// volatile accesses so that they stay in memory.
#[inline(always)]
fn search_step(walk: &mut Walk, key_at: impl Fn(u32) -> Option<u64>) -> bool {
    // SAFETY: plain accesses to this CPU's walk slot.
    let (lo, hi) = unsafe { (core::ptr::read_volatile(&walk.lo), core::ptr::read_volatile(&walk.hi)) };
    if lo >= hi {
        return true;
    }
    let mid = lo + (hi - lo) / 2;
    // SAFETY: as above.
    unsafe {
        match key_at(mid) {
            Some(key) if key <= walk.search_target => core::ptr::write_volatile(&mut walk.lo, mid + 1),
            Some(_) => core::ptr::write_volatile(&mut walk.hi, mid),
            None => {
                core::ptr::write_volatile(&mut walk.search_failed, 1);
                return true;
            }
        }
    }
    false
}
