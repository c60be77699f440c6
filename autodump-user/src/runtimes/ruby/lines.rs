//! The source line of an instruction, as CRuby finds it (`iseq.c`: `calc_pos`,
//! `get_insn_info_succinct_bitvector`, `succ_index_lookup`): an iseq keeps one entry per run of
//! instructions on one line, and a succinct bit vector that maps an instruction's position to the
//! rank of its entry. Both are bytes read from the process: every index is checked, so garbage
//! gives no line, never a panic (fuzzed: `fuzz/fuzz_targets/ruby_memory.rs`).

/// Positions below this are ranked by 7-bit fields of the table's first six words.
const IMMEDIATE: u64 = 54;
/// The table's immediate part, then blocks of 512 positions: a rank, seven 9-bit small ranks,
/// and 512 bits.
const IMMEDIATE_BYTES: u64 = 48;
const BLOCK_BYTES: u64 = 80;
const BLOCK_BITS: u64 = 512;

/// Bytes of the bit vector of an iseq of `iseq_size` words.
pub fn succ_table_len(iseq_size: u64) -> u64 {
    let blocks = iseq_size.saturating_sub(IMMEDIATE).div_ceil(BLOCK_BITS);
    IMMEDIATE_BYTES + blocks * BLOCK_BYTES
}

fn word(bytes: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    Some(u64::from_le_bytes(bytes.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// The rank of position `pos` in the bit vector `table`: how many entries start at or before it.
pub fn succ_index(table: &[u8], pos: u64) -> Option<u64> {
    if pos < IMMEDIATE {
        let part = word(table, pos / 9 * 8)?;
        return Some((part >> ((pos % 9) * 7)) & 0x7f);
    }
    let bit = pos - IMMEDIATE;
    let block = IMMEDIATE_BYTES.checked_add((bit / BLOCK_BITS).checked_mul(BLOCK_BYTES)?)?;
    let rank = word(table, block)? & 0xffff_ffff;
    let small_ranks = word(table, block + 8)?;
    let in_block = bit % BLOCK_BITS;
    let small = in_block / 64;
    let small_rank = if small == 0 { 0 } else { (small_ranks >> ((small - 1) * 9)) & 0x1ff };
    let bits = word(table, block + 16 + small * 8)?;
    let below = (bits << (63 - in_block % 64)).count_ones() as u64;
    Some(rank + small_rank + below)
}

/// The line of the instruction at word `pos` of an iseq's code (its frame's `pc` less the code's
/// start: the instruction before it is the one running), from its `count` line entries
/// (`entry_size` bytes each, `line_no` first) and, for more than one, its bit vector.
pub fn line_of(entries: &[u8], entry_size: u64, count: u64, table: Option<&[u8]>, pos: u64) -> Option<u32> {
    let index = match count {
        0 => return None,
        1 => 0,
        _ => succ_index(table?, pos.saturating_sub(1))?.checked_sub(1)?,
    };
    let at = usize::try_from(index.checked_mul(entry_size)?).ok()?;
    let line = i32::from_le_bytes(entries.get(at..at.checked_add(4)?)?.try_into().ok()?);
    u32::try_from(line).ok().filter(|&l| l > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table built as Ruby's `succ_index_table_create` builds one, for entries starting at
    /// `starts` (positions, increasing) in code of `size` words.
    fn table(starts: &[u64], size: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; succ_table_len(size) as usize];
        let mut rank = 0u64;
        let put = |bytes: &mut Vec<u8>, at: u64, v: u64| {
            bytes[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes())
        };
        let mut imm = [0u64; 6];
        for pos in 0..IMMEDIATE.min(size) {
            rank += u64::from(starts.contains(&pos));
            imm[(pos / 9) as usize] |= rank << (7 * (pos % 9));
        }
        imm.iter().enumerate().for_each(|(i, v)| put(&mut bytes, i as u64 * 8, *v));
        let mut pos = IMMEDIATE;
        while pos < size {
            let block = IMMEDIATE_BYTES + (pos - IMMEDIATE) / BLOCK_BITS * BLOCK_BYTES;
            put(&mut bytes, block, rank);
            let (mut small_ranks, mut in_block) = (0u64, 0u64);
            for small in 0..8 {
                if small > 0 {
                    small_ranks |= in_block << (9 * (small - 1));
                }
                let mut bits = 0u64;
                for b in 0..64 {
                    if starts.contains(&(pos + small * 64 + b)) {
                        bits |= 1 << b;
                        in_block += 1;
                    }
                }
                put(&mut bytes, block + 16 + small * 8, bits);
            }
            put(&mut bytes, block + 8, small_ranks);
            rank += in_block;
            pos += BLOCK_BITS;
        }
        bytes
    }

    fn entries(lines: &[i32]) -> Vec<u8> {
        lines.iter().flat_map(|l| [l.to_le_bytes(), 7i32.to_le_bytes(), 0i32.to_le_bytes()].concat()).collect()
    }

    #[test]
    fn positions_find_the_line_of_the_instruction_before_them() {
        // Entries start at words 0, 3, 60 and 700: lines 10, 11, 12, 13.
        let starts = [0, 3, 60, 700];
        let (t, e) = (table(&starts, 1200), entries(&[10, 11, 12, 13]));
        let line = |pos| line_of(&e, 12, 4, Some(&t), pos);
        assert_eq!(line(1), Some(10), "pc after the first instruction");
        assert_eq!(line(3), Some(10), "pc at word 3: the instruction before it, at 2");
        assert_eq!(line(4), Some(11));
        assert_eq!(line(61), Some(12), "in the first block");
        assert_eq!(line(700), Some(12));
        assert_eq!(line(701), Some(13), "in the second block");
        assert_eq!(line(1199), Some(13));
        assert_eq!(line_of(&e, 12, 1, None, 500), Some(10), "one entry needs no table");
        assert_eq!(line_of(&e, 12, 0, None, 5), None);
    }

    #[test]
    fn garbage_gives_no_line() {
        let e = entries(&[10, 11]);
        assert_eq!(line_of(&e, 12, 2, Some(&[0xff; 20]), 100), None, "a table cut short");
        assert_eq!(line_of(&e, 12, 2, Some(&[0xff; 48]), 5), None, "a rank past the entries");
        assert_eq!(line_of(&e, u64::MAX, 2, Some(&table(&[0, 1], 60)), 5), None);
        assert_eq!(succ_index(&[], u64::MAX), None);
    }
}
