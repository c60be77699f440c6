//! A minimal reader of the kernel's BTF: the byte offset of one field of one struct.
//!
//! Rust eBPF has no CO-RE relocations, so the probes read `next->pid` at an offset found here at
//! run time. aya keeps its BTF type model private; this reader walks the type section, bounded by
//! the section's own lengths, and never trusts a count without checking it against the data.

use std::path::Path;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source} (this kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    Read { path: String, source: std::io::Error },
    #[error("BTF data is malformed: {0}")]
    Malformed(&'static str),
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    #[error("struct {0} has no field {1} in BTF")]
    NoField(String, String),
    #[error("the kernel is not supported: {0}")]
    Unsupported(&'static str),
}

/// The raw BTF in the file at `path`.
pub fn read(path: &Path) -> Result<Vec<u8>, BtfError> {
    std::fs::read(path).map_err(|source| BtfError::Read { path: path.display().to_string(), source })
}

/// Byte offset of `field` in `struct strukt` in raw (little-endian, native) BTF data.
pub fn field_offset(data: &[u8], strukt: &str, field: &str) -> Result<u32, BtfError> {
    Btf::parse(data)?.field_offset(strukt, field)
}

const KIND_PTR: u32 = 2;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_ENUM64: u32 = 19;

/// The kernel's types, indexed once: every lookup after `parse` is bounded by the index.
pub struct Btf<'a> {
    sections: Sections<'a>,
    /// Where each type starts in the type section; type id N is at `starts[N - 1]`.
    starts: Vec<usize>,
}

/// One type's common header.
struct Type<'a> {
    name: &'a str,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// The referenced type id (PTR, TYPEDEF, ...) or the size (STRUCT, ...).
    size_or_type: u32,
    /// Where the kind's trailing entries (members, params, values) start.
    entries: usize,
}

impl<'a> Btf<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let sections = Sections::parse(data)?;
        let mut starts = Vec::new();
        let mut pos = 0usize;
        while pos < sections.types.len() {
            let info = sections.u32_at(pos + 4)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            starts.push(pos);
            pos += 12 + trailing_len(kind, vlen).ok_or(BtfError::Malformed("unknown type kind"))?;
        }
        Ok(Self { sections, starts })
    }

    fn type_at(&self, id: u32) -> Result<Type<'a>, BtfError> {
        let pos = *id
            .checked_sub(1)
            .and_then(|i| self.starts.get(i as usize))
            .ok_or(BtfError::Malformed("type id out of range"))?;
        let info = self.sections.u32_at(pos + 4)?;
        Ok(Type {
            name: self.sections.string(self.sections.u32_at(pos)?)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: self.sections.u32_at(pos + 8)?,
            entries: pos + 12,
        })
    }

    /// The first type of `kind` named `name`.
    fn find(&self, kind: u32, name: &str) -> Result<Option<Type<'a>>, BtfError> {
        for id in 1..=self.starts.len() as u32 {
            let t = self.type_at(id)?;
            if t.kind == kind && t.name == name {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    /// Byte offset of `field` in `struct strukt`, also where the field sits in an anonymous
    /// struct or union member (`vm_area_struct::vm_flags` since 6.3).
    pub fn field_offset(&self, strukt: &str, field: &str) -> Result<u32, BtfError> {
        let t = self.find(KIND_STRUCT, strukt)?.ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        self.member_offset(&t, field, 0)?.ok_or_else(|| BtfError::NoField(strukt.into(), field.into()))
    }

    /// How deep anonymous members may nest (a bound for malformed, cyclic BTF).
    const MAX_ANONYMOUS_DEPTH: u32 = 4;

    fn member_offset(&self, t: &Type<'a>, field: &str, depth: u32) -> Result<Option<u32>, BtfError> {
        for i in 0..t.vlen {
            let member = t.entries + i * 12;
            let raw = self.sections.u32_at(member + 8)?;
            // With kind_flag the top 8 bits hold a bitfield size; the offset is in bits.
            let bytes = if t.kind_flag { raw & 0x00ff_ffff } else { raw } / 8;
            let name = self.sections.string(self.sections.u32_at(member)?)?;
            if name == field {
                return Ok(Some(bytes));
            }
            if name.is_empty() && depth < Self::MAX_ANONYMOUS_DEPTH {
                let inner = self.type_at(self.sections.u32_at(member + 4)?)?;
                if [KIND_STRUCT, KIND_UNION].contains(&inner.kind) {
                    if let Some(offset) = self.member_offset(&inner, field, depth + 1)? {
                        return Ok(Some(bytes + offset));
                    }
                }
            }
        }
        Ok(None)
    }

    /// How many arguments the kernel passes to a BTF program on tracepoint `name`: the
    /// parameters of `typedef void (*btf_trace_NAME)(void *ctx, ...)`, less the context.
    pub fn tracepoint_args(&self, name: &str) -> Result<Option<usize>, BtfError> {
        let Some(typedef) = self.find(KIND_TYPEDEF, &format!("btf_trace_{name}"))? else { return Ok(None) };
        let pointer = self.type_at(typedef.size_or_type)?;
        if pointer.kind != KIND_PTR {
            return Err(BtfError::Malformed("a tracepoint typedef is not a function pointer"));
        }
        let proto = self.type_at(pointer.size_or_type)?;
        if proto.kind != KIND_FUNC_PROTO || proto.vlen == 0 {
            return Err(BtfError::Malformed("a tracepoint typedef is not a function pointer"));
        }
        Ok(Some(proto.vlen - 1))
    }

    /// True if `enum name` has a value named `value` (e.g. a helper in `enum bpf_func_id`).
    pub fn enum_has(&self, name: &str, value: &str) -> Result<bool, BtfError> {
        for (kind, stride) in [(KIND_ENUM, 8), (KIND_ENUM64, 12)] {
            if let Some(t) = self.find(kind, name)? {
                for i in 0..t.vlen {
                    if self.sections.string(self.sections.u32_at(t.entries + i * stride)?)? == value {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }
}

/// Bytes that follow the 12-byte common header of a type of `kind` with `vlen` entries.
fn trailing_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
        2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        3 => 12,                      // ARRAY
        4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
        _ => return None,
    })
}

struct Sections<'a> {
    types: &'a [u8],
    strings: &'a [u8],
}

impl<'a> Sections<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let word = |at: usize| -> Result<u32, BtfError> {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .ok_or(BtfError::Malformed("header is truncated"))
        };
        let magic = data.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if magic != Some(BTF_MAGIC) {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = word(4)? as usize;
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off).ok_or(BtfError::Malformed("section offset overflows"))?;
            let end = start.checked_add(len).ok_or(BtfError::Malformed("section length overflows"))?;
            data.get(start..end).ok_or(BtfError::Malformed("section lies outside the data"))
        };
        Ok(Self {
            types: section(word(8)? as usize, word(12)? as usize)?,
            strings: section(word(16)? as usize, word(20)? as usize)?,
        })
    }

    fn u32_at(&self, at: usize) -> Result<u32, BtfError> {
        self.types
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or(BtfError::Malformed("type section is truncated"))
    }

    fn string(&self, offset: u32) -> Result<&'a str, BtfError> {
        let tail = self.strings.get(offset as usize..).ok_or(BtfError::Malformed("string offset out of range"))?;
        let end = tail.iter().position(|&b| b == 0).ok_or(BtfError::Malformed("unterminated string"))?;
        std::str::from_utf8(&tail[..end]).map_err(|_| BtfError::Malformed("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_task_struct_pid_in_this_kernel() {
        let Ok(data) = std::fs::read(VMLINUX_BTF) else {
            eprintln!("skipped: {VMLINUX_BTF} is not readable here");
            return;
        };
        let pid = field_offset(&data, "task_struct", "pid").unwrap();
        let tgid = field_offset(&data, "task_struct", "tgid").unwrap();
        // pid_t pid; pid_t tgid; sit next to each other in every kernel since 2.6.
        assert_eq!(tgid, pid + 4);
        assert!(pid > 100, "pid offset {pid} is implausibly small");
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(matches!(field_offset(b"", "a", "b"), Err(BtfError::Malformed(_))));
        assert!(matches!(field_offset(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0], "a", "b"), Err(BtfError::Malformed(_))));
        let mut header = vec![0x9f, 0xeb, 1, 0];
        for word in [24u32, 0, 1000, 0, 0] {
            header.extend_from_slice(&word.to_le_bytes());
        }
        assert!(matches!(field_offset(&header, "a", "b"), Err(BtfError::Malformed(_))));
    }

    #[test]
    fn reports_missing_struct_and_field() {
        let Ok(data) = std::fs::read(VMLINUX_BTF) else {
            return;
        };
        assert!(matches!(field_offset(&data, "no_such_struct_x", "pid"), Err(BtfError::NoStruct(_))));
        assert!(matches!(field_offset(&data, "task_struct", "no_such_field_x"), Err(BtfError::NoField(..))));
    }
}
