//! An ELF file's loaded segments, to move between file offsets (what the symbolizer gets from a
//! process's memory map) and virtual addresses (what symbol tables, `.gopclntab`, `.eh_frame`
//! and debug files speak in).

use object::{Object, ObjectSegment};

#[derive(Clone, Debug, Default)]
pub struct Segments(Vec<(u64, u64, u64)>);

impl Segments {
    /// The PT_LOAD segments with bytes in the file: (virtual address, file offset, size).
    pub fn of<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>) -> Self {
        Self(elf.segments().map(|s| (s.address(), s.file_range().0, s.file_range().1)).filter(|s| s.2 > 0).collect())
    }

    pub fn to_vaddr(&self, offset: u64) -> Option<u64> {
        self.0
            .iter()
            .find(|&&(_, off, size)| offset >= off && offset - off < size)
            .map(|&(va, off, _)| va + (offset - off))
    }

    /// Virtual address minus file offset in the segment a mapping at page-aligned `offset`
    /// loads. The mapping may begin up to a page before the segment's first byte (lld lays
    /// segments out so), on a page the previous segment ends in: the segment that begins on
    /// that page is the one mapped there.
    pub fn delta_for_mapping(&self, offset: u64) -> Option<u64> {
        const PAGE: u64 = 4096;
        let delta = |&(va, off, _): &(u64, u64, u64)| va.wrapping_sub(off);
        self.0
            .iter()
            .find(|&&(_, off, _)| off & !(PAGE - 1) == offset)
            .or_else(|| self.0.iter().find(|&&(_, off, size)| offset >= off & !(PAGE - 1) && offset < off + size))
            .map(delta)
    }

    pub fn to_offset(&self, va: u64) -> Option<u64> {
        self.0
            .iter()
            .find(|&&(start, _, size)| va >= start && va - start < size)
            .map(|&(start, off, _)| off + (va - start))
    }
}
