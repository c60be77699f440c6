//! Source lines of a method's bytecodes, as the JVM finds them (`Method::line_number_from_bci`):
//! a `ConstMethod` whose flags say it has one keeps a compressed line number table right after
//! its bytecodes. Each pair is a byte (bci delta in its top five bits, line delta in its low
//! three) or 0xff and two zigzag UNSIGNED5 numbers; a zero byte ends the table. The line of a
//! bytecode index is the exact entry's, else the nearest entry below it.

use super::{
    scopes::{excluded, Unsigned5},
    vmstructs::VmStructs,
};
use crate::collect::remote::RemoteMemory;

/// Bytes of a table read at most.
const MAX_TABLE: u64 = 4096;
/// `ConstMethod`'s flag of a line number table (the same bit in JDK 17's flags and 21's).
const HAS_LINE_NUMBERS: u32 = 1;

/// Where a `ConstMethod` says what its line number table needs.
#[derive(Clone, Debug)]
pub struct LineLayout {
    flags: u64,
    /// The flags are four bytes (JDK 21 on), not two.
    wide_flags: bool,
    code_size: u64,
    method_size: u64,
    header: u64,
    excluded: u8,
}

impl LineLayout {
    pub fn of(vm: &VmStructs, major: Option<u32>) -> Option<Self> {
        let (flags, wide_flags) = match vm.value("ConstMethod", "_flags._flags") {
            Some(at) => (at, true),
            None => (vm.value("ConstMethod", "_flags")?, false),
        };
        Some(Self {
            flags,
            wide_flags,
            code_size: vm.value("ConstMethod", "_code_size")?,
            method_size: vm.value("ConstMethod", "_constMethod_size")?,
            header: vm.size("ConstMethod").filter(|&s| s <= 256)?,
            excluded: excluded(major?),
        })
    }
}

impl LineLayout {
    /// Where a method's bytecodes begin in its `ConstMethod`.
    pub fn bytecodes(&self) -> u64 {
        self.header
    }
}

/// The (bytecode index, line) pairs of the `ConstMethod` at `constant`; empty without a table.
pub fn table(m: &dyn RemoteMemory, l: &LineLayout, constant: u64) -> Option<Vec<(u32, u32)>> {
    let mut word = [0u8; 4];
    m.read(constant.wrapping_add(l.flags), &mut word[..if l.wide_flags { 4 } else { 2 }]).ok()?;
    if u32::from_le_bytes(word) & HAS_LINE_NUMBERS == 0 {
        return Some(Vec::new());
    }
    let mut two = [0u8; 2];
    m.read(constant.wrapping_add(l.code_size), &mut two).ok()?;
    let start = l.header + u64::from(u16::from_le_bytes(two));
    // The table lies within the `ConstMethod` (its size is in words).
    let words = u64::try_from(m.i32(constant.wrapping_add(l.method_size)).ok()?).ok()?;
    let len = (words * 8).checked_sub(start)?.min(MAX_TABLE);
    let mut bytes = vec![0u8; len as usize];
    m.read(constant.wrapping_add(start), &mut bytes).ok()?;
    Some(decode(&bytes, l.excluded))
}

/// The pairs of a compressed table, up to its end mark (or garbage).
pub fn decode(bytes: &[u8], excluded: u8) -> Vec<(u32, u32)> {
    let (mut bci, mut line, mut pairs) = (0u32, 0u32, Vec::new());
    let mut stream = Unsigned5 { bytes, excluded };
    while let Some((&next, rest)) = stream.bytes.split_first() {
        stream.bytes = rest;
        match next {
            0 => break,
            0xff => {
                let zigzag = |v: u32| ((v >> 1) as i32 ^ -((v & 1) as i32)) as u32;
                let (Some(b), Some(l)) = (stream.next(), stream.next()) else { break };
                bci = bci.wrapping_add(zigzag(b));
                line = line.wrapping_add(zigzag(l));
            }
            _ => {
                bci = bci.wrapping_add(u32::from(next >> 3));
                line = line.wrapping_add(u32::from(next & 7));
            }
        }
        pairs.push((bci, line));
    }
    pairs
}

/// The line of bytecode `bci`: its entry's, else the nearest entry's below it.
pub fn line_at(pairs: &[(u32, u32)], bci: u32) -> Option<u32> {
    if let Some(&(_, line)) = pairs.iter().find(|(b, _)| *b == bci) {
        return Some(line);
    }
    pairs.iter().filter(|(b, _)| *b < bci).max_by_key(|(b, _)| *b).map(|&(_, line)| line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressed_table_reads_as_the_jvm_reads_it() {
        // (0, 7) in one byte: 0 << 3 | 7; (4, 9): 4 << 3 | 2; then 0xff with bci +200 (zigzag
        // 400 = bytes 208, 3) and line -1 (zigzag 1); the end.
        let pairs = decode(&[7, 4 << 3 | 2, 0xff, 208, 3, 1, 0, 99], 0);
        assert_eq!(pairs, [(0, 7), (4, 9), (204, 8)]);
        assert_eq!(line_at(&pairs, 4), Some(9));
        assert_eq!(line_at(&pairs, 100), Some(9), "the nearest entry below");
        assert_eq!(line_at(&pairs, 500), Some(8));
        assert!(decode(&[0xff, 250], 0).is_empty(), "a pair cut short is not read");
    }
}
