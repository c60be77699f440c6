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

    pub fn to_offset(&self, va: u64) -> Option<u64> {
        self.0
            .iter()
            .find(|&&(start, _, size)| va >= start && va - start < size)
            .map(|&(start, off, _)| off + (va - start))
    }
}
