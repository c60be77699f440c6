//! Go runtime struct layouts, read from the binary's own DWARF: the offset of `schedt.gFree.n`
//! or `g.sched.bp` comes from the binary being read, not from a table per Go version.

use std::{borrow::Cow, collections::HashMap};

use gimli::{AttributeValue, EndianSlice, LittleEndian};
use object::Object;

use super::{shape::Offsets, GoError};

struct Member {
    name: String,
    offset: u64,
    /// Global .debug_info offset of the member's type.
    ty: Option<usize>,
}

/// Struct types by name (and by offset, for anonymous ones), with their members; typedefs.
#[derive(Default)]
pub struct Layout {
    by_name: HashMap<String, usize>,
    structs: HashMap<usize, (u64, Vec<Member>)>,
    typedefs: HashMap<usize, usize>,
}

impl Layout {
    /// The struct layouts the reader needs.
    pub fn offsets(&self) -> Result<Offsets, GoError> {
        Ok(Offsets {
            g_size: self.size("runtime.g")?,
            g_stack_lo: self.offset("runtime.g", &["stack", "lo"])?,
            g_stack_hi: self.offset("runtime.g", &["stack", "hi"])?,
            g_sched_pc: self.offset("runtime.g", &["sched", "pc"])?,
            g_sched_bp: self.offset("runtime.g", &["sched", "bp"])?,
            g_status: self.offset("runtime.g", &["atomicstatus"])?,
            g_waitreason: self.offset("runtime.g", &["waitreason"])?,
            g_startpc: self.offset("runtime.g", &["startpc"])?,
            g_goid: self.offset("runtime.g", &["goid"])?,
            g_waitsince: self.offset("runtime.g", &["waitsince"])?,
            g_trackingseq: self.offset("runtime.g", &["trackingSeq"])?,
            g_syscallsp: match self.offset("runtime.g", &["syscallbp"]) {
                Ok(_) => None,
                Err(_) => Some(self.offset("runtime.g", &["syscallsp"])?),
            },
            sched_gfree: match self.offset("runtime.schedt", &["gFree", "n"]) {
                Ok(n) => vec![n],
                Err(_) => vec![
                    self.offset("runtime.schedt", &["gFree", "stack", "size"])?,
                    self.offset("runtime.schedt", &["gFree", "noStack", "size"])?,
                ],
            },
            sched_ngsys: self.offset("runtime.schedt", &["ngsys"])?,
            p_gfree_n: self
                .offset("runtime.p", &["gFree", "n"])
                .or_else(|_| self.offset("runtime.p", &["gFree", "size"]))?,
        })
    }

    pub fn parse(elf: &object::File<'_>) -> Result<Self, GoError> {
        /// A DWARF section larger than this (or claiming to decompress to more) is not read.
        const MAX_DWARF_SECTION: u64 = 512 << 20;
        let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, GoError> {
            Ok(match elf.section_by_name(id.name()) {
                Some(section) => crate::files::bounded_section_data(&section, MAX_DWARF_SECTION).ok_or_else(|| {
                    GoError::Binary(format!("{}: unreadable, or over {MAX_DWARF_SECTION} bytes", id.name()))
                })?,
                None => Cow::Borrowed(&[][..]),
            })
        };
        let sections = gimli::DwarfSections::load(load)?;
        let dwarf = sections.borrow(|s| EndianSlice::new(s, LittleEndian));
        let dwarf_err = |e: gimli::Error| GoError::Binary(format!("DWARF: {e}"));
        let mut layout = Layout::default();
        let mut units = dwarf.units();
        while let Some(header) = units.next().map_err(dwarf_err)? {
            let base = header.offset().to_debug_info_offset(&header).map_or(0, |o| o.0);
            let unit = dwarf.unit(header).map_err(dwarf_err)?;
            let mut entries = unit.entries();
            let mut open: Option<(usize, isize)> = None;
            while let Some(entry) = entries.next_dfs().map_err(dwarf_err)? {
                let key = base + entry.offset().0;
                let depth = entry.depth();
                let name = entry
                    .attr_value(gimli::DW_AT_name)
                    .and_then(|v| dwarf.attr_string(&unit, v).ok())
                    .map(|s| s.to_string_lossy().into_owned());
                let ty = match entry.attr_value(gimli::DW_AT_type) {
                    Some(AttributeValue::UnitRef(o)) => Some(base + o.0),
                    Some(AttributeValue::DebugInfoRef(o)) => Some(o.0),
                    _ => None,
                };
                if open.is_some_and(|(_, d)| depth <= d) {
                    open = None;
                }
                match entry.tag() {
                    gimli::DW_TAG_structure_type => {
                        let size = entry.attr_value(gimli::DW_AT_byte_size).and_then(|v| v.udata_value()).unwrap_or(0);
                        layout.structs.insert(key, (size, Vec::new()));
                        if let Some(name) = name {
                            layout.by_name.entry(name).or_insert(key);
                        }
                        open = Some((key, depth));
                    }
                    gimli::DW_TAG_member => {
                        if let (Some((parent, _)), Some(name)) = (open, name) {
                            let offset = entry
                                .attr_value(gimli::DW_AT_data_member_location)
                                .and_then(|v| v.udata_value())
                                .unwrap_or(0);
                            if let Some(s) = layout.structs.get_mut(&parent) {
                                s.1.push(Member { name, offset, ty });
                            }
                        }
                    }
                    gimli::DW_TAG_typedef => {
                        if let Some(ty) = ty {
                            layout.typedefs.insert(key, ty);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(layout)
    }

    /// Byte offset of `path` (e.g. `["gFree", "n"]`) inside the struct named `strukt`.
    pub fn offset(&self, strukt: &str, path: &[&str]) -> Result<u64, GoError> {
        let missing = || GoError::Layout(format!("{strukt}.{}", path.join(".")));
        let mut key = *self.by_name.get(strukt).ok_or_else(missing)?;
        let mut offset = 0;
        for (i, part) in path.iter().enumerate() {
            let (_, members) = self.structs.get(&key).ok_or_else(missing)?;
            let member = members.iter().find(|m| m.name == *part).ok_or_else(missing)?;
            offset += member.offset;
            if i + 1 < path.len() {
                key = self.resolve(member.ty.ok_or_else(missing)?);
            }
        }
        Ok(offset)
    }

    /// Size in bytes of the struct named `strukt`.
    pub fn size(&self, strukt: &str) -> Result<u64, GoError> {
        let key = self.by_name.get(strukt).ok_or_else(|| GoError::Layout(strukt.to_string()))?;
        Ok(self.structs.get(key).map_or(0, |s| s.0))
    }

    /// Follows typedefs (bounded: a malformed file may loop) to the type they name.
    fn resolve(&self, mut key: usize) -> usize {
        for _ in 0..16 {
            match self.typedefs.get(&key) {
                Some(&next) => key = next,
                None => break,
            }
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Structs of this test binary, described by its own DWARF like the Go runtime's are.
    #[repr(C)]
    struct LayoutProbeInner {
        x: u64,
        y: u16,
    }

    #[repr(C)]
    struct LayoutProbeOuter {
        a: u32,
        inner: LayoutProbeInner,
    }

    #[test]
    fn resolves_member_paths_through_nested_structs() {
        let probe = LayoutProbeOuter { a: 1, inner: LayoutProbeInner { x: 2, y: 3 } };
        std::hint::black_box(&probe);
        let _ = (probe.a, probe.inner.x, probe.inner.y);
        let data = std::fs::read("/proc/self/exe").unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let layout = Layout::parse(&elf).unwrap();
        assert_eq!(layout.offset("LayoutProbeOuter", &["a"]).unwrap(), 0);
        assert_eq!(layout.offset("LayoutProbeOuter", &["inner", "x"]).unwrap(), 8);
        assert_eq!(layout.offset("LayoutProbeOuter", &["inner", "y"]).unwrap(), 16);
        assert_eq!(layout.size("LayoutProbeOuter").unwrap(), 24);
        assert!(matches!(layout.offset("LayoutProbeOuter", &["inner", "z"]), Err(GoError::Layout(_))));
        assert!(matches!(layout.offset("NoSuchStruct", &["a"]), Err(GoError::Layout(_))));
    }
}
