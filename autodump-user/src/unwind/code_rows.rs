//! Rows for code no file backs, given by the runtime that generates it (a JIT's code cache: each
//! compiled method's frame size), kept in the same array as the files' rows. Each process gets a
//! pair of blocks: new rows are written into the block the probes are not reading, and the
//! process's mapping table is then pointed at it, so a walk never reads a table half written.
//! A block too small for new rows is given up for a pair twice the size they need (kept while
//! none can be had); a pair of a process no longer watched goes to the next process that needs
//! one.

use autodump_common::unwind::UnwindRow;

use super::row_store::RowStore;

/// Rows a block holds at least.
const MIN_BLOCK: u32 = 16_384;

/// What a runtime says about code it generates: rows sorted by address, each relative to `base`,
/// for the code in `[base, end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeRows {
    pub base: u64,
    pub end: u64,
    pub rows: Vec<UnwindRow>,
}

/// Two blocks of `capacity` rows from `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pair {
    start: u32,
    capacity: u32,
}

/// One process's code rows in the array.
#[derive(Clone, Copy, Debug)]
pub struct Placed {
    pub base: u64,
    pub end: u64,
    /// The rows the probes read now: their first index and count.
    pub row_start: u32,
    pub row_count: u32,
    pair: Pair,
    /// Which block of the pair holds them.
    block: u32,
}

#[derive(Default)]
pub struct CodeRowBlocks {
    pub placed: std::collections::HashMap<u32, Placed>,
    free: Vec<Pair>,
}

impl CodeRowBlocks {
    /// Writes `rows` for `pid` into the block its walks do not read; the caller then rewrites
    /// its mapping table. Err: no room in the array.
    pub fn place(&mut self, store: &mut RowStore, pid: u32, code: &CodeRows) -> Result<Placed, String> {
        let count = u32::try_from(code.rows.len()).map_err(|_| "too many rows".to_string())?;
        let current = self.placed.get(&pid).copied();
        let (pair, block) = match current {
            Some(p) if p.pair.capacity >= count => (p.pair, p.block ^ 1),
            _ => {
                // Twice what is needed now, for the code still to come: a JVM's code grows, and
                // doubling bounds what the pairs given up take to what the last one takes.
                let capacity = count.saturating_mul(2).max(MIN_BLOCK);
                let pair = match self.free.iter().position(|p| p.capacity >= count) {
                    Some(i) => self.free.swap_remove(i),
                    None => Pair {
                        start: store.reserve(capacity.checked_mul(2).ok_or("too many rows")?).ok_or_else(|| {
                            format!("the unwind table has no room for {count} more rows (--unwind-table-rows)")
                        })?,
                        capacity,
                    },
                };
                // The old pair is given up only once the new one is had: until then its rows stay.
                if let Some(old) = current {
                    self.free.push(old.pair);
                }
                (pair, 0)
            }
        };
        let row_start = pair.start + block * pair.capacity;
        store.write(row_start, &code.rows);
        let placed = Placed { base: code.base, end: code.end, row_start, row_count: count, pair, block };
        self.placed.insert(pid, placed);
        Ok(placed)
    }

    /// `pid` is no longer watched: its pair goes to the next process that needs one.
    /// Returns how many rows it had.
    pub fn forget(&mut self, pid: u32) -> u32 {
        let Some(placed) = self.placed.remove(&pid) else { return 0 };
        self.free.push(placed.pair);
        placed.row_count
    }
}
