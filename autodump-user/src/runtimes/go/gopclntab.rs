//! Go's own symbol table, `.gopclntab`, which every Go binary keeps because the runtime needs it
//! for its tracebacks: function names, files, lines and the inlining tree survive
//! `-ldflags=-s -w`. A small reader of the formats Go 1.16+ writes (magic 0xfffffffa for
//! 1.16-1.17, 0xfffffff0 for 1.18-1.19, 0xfffffff1 for 1.20+), after the runtime's own
//! `runtime/symtab.go` and the linker's `cmd/link/internal/ld/pcln.go`.
//!
//! Every read is bounds-checked against the file and every walk is bounded, so a garbage table
//! yields `None` for the addresses it cannot explain, never a panic or an unbounded loop
//! (fuzzed: `fuzz/fuzz_targets/go_pclntab.rs`).

/// The table's layout generation, from its magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Go116,
    Go118,
    Go120,
}

impl Version {
    pub fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            0xffff_fffa => Some(Self::Go116),
            0xffff_fff0 => Some(Self::Go118),
            0xffff_fff1 => Some(Self::Go120),
            _ => None,
        }
    }

    /// Size of `runtime._func` before its `pcdata` array, and where `nfuncdata` sits in it.
    fn func_header(self) -> (usize, usize) {
        match self {
            Self::Go116 => (44, 43),
            Self::Go118 => (40, 39),
            Self::Go120 => (44, 43),
        }
    }

    /// Size of `runtime.inlinedCall` and the offsets of its name and `parentPc` fields.
    fn inlined_call(self) -> (usize, usize, usize) {
        match self {
            Self::Go116 | Self::Go118 => (20, 12, 16),
            Self::Go120 => (16, 4, 8),
        }
    }
}

/// `_func.pcdata` index of the inlining-tree index table, and `_func.funcdata` index of the tree.
const PCDATA_INL_TREE_INDEX: usize = 2;
const FUNCDATA_INL_TREE: usize = 3;
/// Deeper inlining than this is garbage (the compiler's own budget is far lower).
const MAX_INLINE_DEPTH: usize = 64;
/// Longest name or path read.
const MAX_STRING: usize = 4096;

/// Where the table's parts are, as offsets into the file, plus what maps virtual addresses.
#[derive(Clone, Debug)]
pub struct Pclntab {
    pub version: Version,
    quantum: u64,
    nfunc: usize,
    /// Virtual address that function entries are relative to (1.18+).
    pub text_start: u64,
    funcnames: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
    /// File offset of `go:func.*`, which 1.18+ funcdata offsets are relative to; None when it
    /// could not be found (names and lines still work, inlined frames do not).
    pub gofunc: Option<usize>,
}

/// One function at an address, innermost (inlined) first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFrame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// Reads little-endian integers at file offsets, `None` past the end.
pub struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    fn bytes(&self, at: usize, n: usize) -> Option<&[u8]> {
        self.0.get(at..at.checked_add(n)?)
    }
    pub fn u8(&self, at: usize) -> Option<u8> {
        self.0.get(at).copied()
    }
    pub fn u32(&self, at: usize) -> Option<u32> {
        self.bytes(at, 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    pub fn u64(&self, at: usize) -> Option<u64> {
        self.bytes(at, 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    /// A NUL-terminated string of at most `MAX_STRING` bytes.
    fn str(&self, at: usize) -> Option<String> {
        let tail = self.0.get(at..)?;
        let tail = &tail[..tail.len().min(MAX_STRING)];
        let end = tail.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&tail[..end]).into_owned())
    }
}

impl Pclntab {
    /// Reads the header at file offset `at`. `gofunc` is the file offset of `go:func.*`.
    pub fn parse(file: &[u8], at: usize, gofunc: Option<usize>) -> Option<Self> {
        let r = Reader(file);
        let version = Version::from_magic(r.u32(at)?)?;
        let (quantum, ptr_size) = (r.u8(off(at, 6)?)?, r.u8(off(at, 7)?)?);
        if ptr_size != 8 || !matches!(quantum, 1 | 2 | 4) {
            return None;
        }
        let word = |i: usize| r.u64(off(at, 8 + 8 * i)?);
        let field = |i: usize| -> Option<usize> { at.checked_add(usize::try_from(word(i)?).ok()?) };
        let nfunc = usize::try_from(word(0)?).ok()?;
        // 1.16 has no textStart: its fields after nfiles start one word earlier.
        let (text_start, first) = match version {
            Version::Go116 => (0, 2),
            _ => (word(2)?, 3),
        };
        let table = Self {
            version,
            quantum: u64::from(quantum),
            nfunc,
            text_start,
            funcnames: field(first)?,
            cutab: field(first + 1)?,
            filetab: field(first + 2)?,
            pctab: field(first + 3)?,
            functab: field(first + 4)?,
            gofunc,
        };
        // The function table must fit in the file: this rejects most garbage at once.
        let entry_size = if version == Version::Go116 { 16 } else { 8 };
        let end = nfunc.checked_add(1)?.checked_mul(entry_size)?.checked_add(table.functab)?;
        (end <= file.len()).then_some(table)
    }

    /// Entry address and `_func` file offset of function `i` (0..=nfunc; nfunc is the end).
    fn functab_entry(&self, r: &Reader, i: usize) -> Option<(u64, usize)> {
        match self.version {
            Version::Go116 => {
                let at = self.functab.checked_add(i.checked_mul(16)?)?;
                Some((r.u64(at)?, self.functab.checked_add(usize::try_from(r.u64(off(at, 8)?)?).ok()?)?))
            }
            _ => {
                let at = self.functab.checked_add(i.checked_mul(8)?)?;
                let entry = self.text_start.checked_add(u64::from(r.u32(at)?))?;
                Some((entry, self.functab.checked_add(r.u32(off(at, 4)?)? as usize)?))
            }
        }
    }

    /// The function holding virtual address `pc`: its entry and its `_func` offset.
    fn find_func(&self, r: &Reader, pc: u64) -> Option<(u64, usize)> {
        let (first, _) = self.functab_entry(r, 0)?;
        let (end, _) = self.functab_entry(r, self.nfunc)?;
        if pc < first || pc >= end || self.nfunc == 0 {
            return None;
        }
        // The last entry at or below pc (entries are sorted; garbage just finds nothing useful).
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.functab_entry(r, mid)?.0 <= pc {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.functab_entry(r, lo)
    }

    /// The value of pc-value table `table` (an offset into pctab) at `pc` in a function that
    /// starts at `entry`: the sequence of (value delta, pc delta) pairs the runtime's `pcvalue`
    /// decodes, starting from -1.
    fn pcvalue(&self, r: &Reader, table: u32, entry: u64, pc: u64) -> Option<i32> {
        if table == 0 {
            return None;
        }
        let mut at = self.pctab.checked_add(table as usize)?;
        let (mut value, mut cur) = (-1i32, entry);
        let mut first = true;
        // Each step moves forward in the table, and the table lies inside the file.
        while at < r.0.len() {
            let (delta, n) = varint(r.0.get(at..)?)?;
            at += n;
            if delta == 0 && !first {
                return None;
            }
            first = false;
            let delta = (delta >> 1) as i32 ^ -((delta & 1) as i32);
            value = value.wrapping_add(delta);
            let (pc_delta, n) = varint(r.0.get(at..)?)?;
            at += n;
            cur = cur.checked_add(pc_delta.checked_mul(self.quantum)?)?;
            if pc < cur {
                return Some(value);
            }
        }
        None
    }

    /// The frames at `pc`, innermost first: inlined functions, then the one that holds them.
    pub fn frames(&self, file: &[u8], pc: u64, vaddr_to_offset: impl Fn(u64) -> Option<usize>) -> Option<Vec<GoFrame>> {
        let r = Reader(file);
        let (entry, func) = self.find_func(&r, pc)?;
        let (header, nfuncdata_at) = self.version.func_header();
        let field = |i: usize| r.u32(off(func, self.name_field() + 4 * i)?);
        let name_off = field(0)?;
        let (pcfile, pcln) = (field(4)?, field(5)?);
        let (npcdata, cu_offset) = (field(6)? as usize, field(7)?);
        let pcdata = |i: usize| if i < npcdata { r.u32(off(func, header + 4 * i)?) } else { None };
        let inline_tree =
            self.inline_tree(&r, func, header, npcdata, r.u8(off(func, nfuncdata_at)?)? as usize, &vaddr_to_offset);
        let position = |at_pc: u64| {
            let line = self.pcvalue(&r, pcln, entry, at_pc).and_then(|l| u32::try_from(l).ok());
            let file = self.pcvalue(&r, pcfile, entry, at_pc).and_then(|f| self.file_name(&r, cu_offset, f));
            (file, line)
        };
        let mut frames = Vec::new();
        let mut at_pc = pc;
        for _ in 0..MAX_INLINE_DEPTH {
            let index = match (inline_tree, pcdata(PCDATA_INL_TREE_INDEX)) {
                (Some(tree), Some(table)) => {
                    self.pcvalue(&r, table, entry, at_pc).filter(|&i| i >= 0).map(|i| (tree, i as usize))
                }
                _ => None,
            };
            let (file, line) = position(at_pc);
            let Some((tree, index)) = index else {
                frames.push(GoFrame { function: r.str(self.funcnames.checked_add(name_off as usize)?)?, file, line });
                return Some(frames);
            };
            let (size, name_at, parent_pc_at) = self.version.inlined_call();
            let call = tree.checked_add(index.checked_mul(size)?)?;
            let name = r.str(self.funcnames.checked_add(r.u32(off(call, name_at)?)? as usize)?)?;
            frames.push(GoFrame { function: name, file, line });
            at_pc = entry.checked_add(u64::from(r.u32(off(call, parent_pc_at)?)?))?;
        }
        None
    }

    /// Where `nameOff` sits in `_func`: after the 8-byte entry in 1.16, the 4-byte one after.
    fn name_field(&self) -> usize {
        if self.version == Version::Go116 {
            8
        } else {
            4
        }
    }

    /// File offset of the function's inlining tree, if it has one.
    fn inline_tree(
        &self,
        r: &Reader,
        func: usize,
        header: usize,
        npcdata: usize,
        nfuncdata: usize,
        vaddr_to_offset: &impl Fn(u64) -> Option<usize>,
    ) -> Option<usize> {
        if nfuncdata <= FUNCDATA_INL_TREE {
            return None;
        }
        let after_pcdata = off(func, header.checked_add(npcdata.checked_mul(4)?)?)?;
        match self.version {
            Version::Go116 => {
                // Absolute pointers, aligned to 8 from the start of `_func`.
                let at = off(func, (after_pcdata - func).next_multiple_of(8) + 8 * FUNCDATA_INL_TREE)?;
                vaddr_to_offset(r.u64(at).filter(|&p| p != 0)?)
            }
            _ => {
                let tree = r.u32(off(after_pcdata, 4 * FUNCDATA_INL_TREE)?).filter(|&o| o != u32::MAX)?;
                self.gofunc?.checked_add(tree as usize)
            }
        }
    }

    /// The name of file `index` of the compilation unit at `cu_offset`.
    fn file_name(&self, r: &Reader, cu_offset: u32, index: i32) -> Option<String> {
        let slot = (cu_offset as usize).checked_add(usize::try_from(index).ok()?)?;
        let off = r.u32(self.cutab.checked_add(slot.checked_mul(4)?)?).filter(|&o| o != u32::MAX)?;
        r.str(self.filetab.checked_add(off as usize)?)
    }

    /// Every function's entry address and name (for tests and cross-checks).
    pub fn functions<'s>(&'s self, file: &'s [u8]) -> impl Iterator<Item = (u64, String)> + 's {
        let r = Reader(file);
        (0..self.nfunc).map_while(move |i| {
            let (entry, func) = self.functab_entry(&r, i)?;
            let name_off = r.u32(off(func, self.name_field())?)?;
            Some((entry, r.str(self.funcnames.checked_add(name_off as usize)?)?))
        })
    }
}

/// `base + offset` for offsets read from the table: None where garbage would overflow.
fn off(base: usize, offset: usize) -> Option<usize> {
    base.checked_add(offset)
}

/// An unsigned LEB128 varint and its length; None if it runs off the end or past 64 bits.
pub fn varint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in data.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_decode_and_stop() {
        assert_eq!(varint(&[0x22]), Some((0x22, 1)));
        assert_eq!(varint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(varint(&[0x80]), None);
        assert_eq!(varint(&[0xff; 11]), None);
    }

    #[test]
    fn garbage_is_rejected_or_explains_nothing() {
        assert!(Pclntab::parse(&[], 0, None).is_none());
        let mut data = vec![0u8; 256];
        data[..4].copy_from_slice(&0xffff_fff1u32.to_le_bytes());
        data[6] = 1;
        data[7] = 8;
        // nfunc far beyond the data.
        data[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Pclntab::parse(&data, 0, None).is_none());
        data[8..16].copy_from_slice(&3u64.to_le_bytes());
        let table = Pclntab::parse(&data, 0, None).unwrap();
        for pc in [0, 1, 100, u64::MAX] {
            let _ = table.frames(&data, pc, |_| None);
        }
    }
}
