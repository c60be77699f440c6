//! Methods a compiled method inlined, at an address of its code, as the JVM's debug information
//! records them (what its serviceability agent and JFR read): the nmethod's `PcDesc` table maps
//! an offset in its code to a scope in its scopes data, and each scope is (its caller's scope,
//! the method's index in the nmethod's metadata, the bytecode index), numbers in the UNSIGNED5
//! encoding of Pack200, innermost first.
//!
//! Read for both layouts: JDK 17 to 22 keep the sections at offsets from the nmethod, in one
//! span; from JDK 23 the `PcDesc`s and scopes data are in the nmethod's immutable data and the
//! metadata in its mutable data (after the relocations), both on the C heap.

use super::vmstructs::VmStructs;
use crate::collect::remote::{field_u32, field_u64, RemoteMemory};

/// Largest span of metadata, scopes data and `PcDesc`s read for one nmethod.
const MAX_SECTIONS: u64 = 1 << 20;
/// Scopes followed at most from one address (the JVM inlines at most 15 levels by default).
const MAX_SCOPES: usize = 64;

/// Where an nmethod keeps its debug information, from the tables.
#[derive(Clone, Debug)]
pub struct ScopesLayout {
    sections: SectionsAt,
    pc_desc_size: u64,
    pc_offset: u64,
    scope_decode_offset: u64,
    /// Bytes UNSIGNED5 leaves out of its encoding: 1 from JDK 21 (0 before).
    excluded: u8,
}

/// Where the sections are, by JDK: fields of the nmethod (or its `CodeBlob`).
#[derive(Clone, Debug)]
enum SectionsAt {
    /// JDK 17 to 22: metadata, scopes data, `PcDesc`s, then dependencies, from the nmethod.
    Inline { code_begin: u64, metadata: u64, scopes_data_begin: u64, scopes_pcs: u64, dependencies: u64 },
    /// JDK 23 on: `PcDesc`s then scopes data in the immutable data, metadata in the mutable data.
    Separate {
        code_offset: u64,
        mutable_data: u64,
        mutable_size: u64,
        relocation_size: u64,
        immutable_data: u64,
        immutable_size: u64,
        scopes_pcs: u64,
        scopes_data: u64,
    },
}

impl ScopesLayout {
    /// None when the tables lay the sections out in neither way.
    pub fn of(vm: &VmStructs, major: Option<u32>) -> Option<Self> {
        let offset = |ty: &str, name: &str| vm.inherited_offset(ty, name);
        let inline = || {
            Some(SectionsAt::Inline {
                code_begin: offset("CodeBlob", "_code_begin")?,
                metadata: offset("nmethod", "_metadata_offset")?,
                scopes_data_begin: offset("nmethod", "_scopes_data_begin")?,
                scopes_pcs: offset("nmethod", "_scopes_pcs_offset")?,
                dependencies: offset("nmethod", "_dependencies_offset")?,
            })
        };
        let separate = || {
            Some(SectionsAt::Separate {
                code_offset: offset("CodeBlob", "_code_offset")?,
                mutable_data: offset("CodeBlob", "_mutable_data")?,
                mutable_size: offset("CodeBlob", "_mutable_data_size")?,
                relocation_size: offset("CodeBlob", "_relocation_size")?,
                immutable_data: offset("nmethod", "_immutable_data")?,
                immutable_size: offset("nmethod", "_immutable_data_size")?,
                scopes_pcs: offset("nmethod", "_scopes_pcs_offset")?,
                scopes_data: offset("nmethod", "_scopes_data_offset")?,
            })
        };
        Some(Self {
            sections: inline().or_else(separate)?,
            pc_desc_size: vm.size("PcDesc").filter(|&s| (8..=64).contains(&s))?,
            pc_offset: offset("PcDesc", "_pc_offset")?,
            scope_decode_offset: offset("PcDesc", "_scope_decode_offset")?,
            excluded: excluded(major?),
        })
    }
}

/// The sections of one nmethod that say what it inlined where.
pub struct Sections {
    code_begin: u64,
    metadata: Vec<u8>,
    scopes_data: Vec<u8>,
    scopes_pcs: Vec<u8>,
}

impl Sections {
    /// Reads them from the nmethod at `nmethod`, whose first bytes are `header` (its fields are
    /// taken from there when they lie in it).
    pub fn read(m: &dyn RemoteMemory, l: &ScopesLayout, nmethod: u64, header: &[u8]) -> Option<Self> {
        let u32_at = |at: u64| field_u32(header, at).or_else(|| m.i32(nmethod.wrapping_add(at)).ok().map(|v| v as u32));
        let u64_at = |at: u64| field_u64(header, at).or_else(|| m.field(nmethod, at).ok());
        let int = |at: u64| u32_at(at).and_then(|v| u64::try_from(v as i32).ok());
        let read = |at: u64, len: u64| {
            let mut bytes = vec![0u8; usize::try_from(len).ok().filter(|&l| l as u64 <= MAX_SECTIONS)?];
            m.read(at, &mut bytes).ok().map(|()| bytes)
        };
        match l.sections {
            SectionsAt::Inline { code_begin, metadata, scopes_data_begin, scopes_pcs, dependencies } => {
                let (metadata, scopes_pcs, end) = (int(metadata)?, int(scopes_pcs)?, int(dependencies)?);
                let scopes_data = u64_at(scopes_data_begin)?.checked_sub(nmethod)?;
                if !(metadata <= scopes_data && scopes_data <= scopes_pcs && scopes_pcs <= end) {
                    return None;
                }
                let mut metadata_bytes = read(nmethod + metadata, end - metadata)?;
                let scopes_pcs = metadata_bytes.split_off((scopes_pcs - metadata) as usize);
                let scopes_data = metadata_bytes.split_off((scopes_data - metadata) as usize);
                let code_begin = u64_at(code_begin)?;
                Some(Self { code_begin, metadata: metadata_bytes, scopes_data, scopes_pcs })
            }
            SectionsAt::Separate {
                code_offset,
                mutable_data,
                mutable_size,
                relocation_size,
                immutable_data,
                immutable_size,
                scopes_pcs,
                scopes_data,
            } => {
                let (relocations, mutable_size) = (int(relocation_size)?, int(mutable_size)?);
                let metadata =
                    read(u64_at(mutable_data)?.checked_add(relocations)?, mutable_size.checked_sub(relocations)?)?;
                let (pcs, data, end) = (int(scopes_pcs)?, int(scopes_data)?, int(immutable_size)?);
                if !(pcs <= data && data <= end) {
                    return None;
                }
                let mut scopes_pcs = read(u64_at(immutable_data)?.checked_add(pcs)?, end - pcs)?;
                let scopes_data = scopes_pcs.split_off((data - pcs) as usize);
                let code_begin = nmethod.checked_add(int(code_offset)?)?;
                Some(Self { code_begin, metadata, scopes_data, scopes_pcs })
            }
        }
    }

    /// The `Method*`s of the scopes at `pc`, innermost first (the compiled method last), each
    /// with its bytecode index (None at the method's entry); empty when the nmethod records none
    /// there.
    pub fn methods_at(&self, l: &ScopesLayout, pc: u64) -> Vec<(u64, Option<u32>)> {
        let Some(delta) = pc.checked_sub(self.code_begin).and_then(|d| i32::try_from(d).ok()) else {
            return Vec::new();
        };
        // The first PcDesc at or after the address, as the JVM finds one for a pc that is not a
        // call's return (its "approximate" search): a return address less one finds its call's.
        let pcs = &self.scopes_pcs;
        let word = |block: &[u8], at: u64| crate::collect::remote::field_u32(block, at).map(|v| v as i32);
        let mut best: Option<(i32, i32)> = None;
        for desc in pcs.chunks_exact(l.pc_desc_size as usize) {
            let (Some(offset), Some(scope)) = (word(desc, l.pc_offset), word(desc, l.scope_decode_offset)) else {
                break;
            };
            if offset >= delta && best.is_none_or(|(b, _)| offset < b) {
                best = Some((offset, scope));
            }
        }
        let Some((_, scope)) = best else { return Vec::new() };
        let data = &self.scopes_data;
        let mut methods = Vec::new();
        let (mut at, mut bound) = (usize::try_from(scope).unwrap_or(0), data.len());
        // Each scope's sender lies before it: offsets fall, and the walk ends.
        while at != 0 && at < bound && methods.len() < MAX_SCOPES {
            bound = at;
            let mut stream = Unsigned5 { bytes: &data[at..], excluded: l.excluded };
            let (Some(sender), Some(index), Some(bci)) = (stream.next(), stream.next(), stream.next()) else {
                break;
            };
            if index != 0 {
                // Written plus one (HotSpot's `InvocationEntryBci`, -1, is written as 0).
                let bci = bci.checked_sub(1);
                match self.metadata(index) {
                    Some(method) => methods.push((method, bci)),
                    None => break,
                }
            }
            at = sender as usize;
        }
        methods
    }

    /// The metadata's entry `index` (1-based).
    fn metadata(&self, index: u32) -> Option<u64> {
        let at = (u64::from(index) - 1).checked_mul(8)?;
        field_u64(&self.metadata, at)
    }
}

/// The bytes UNSIGNED5 leaves out on JDK `major` (zero, from 21 on).
pub(super) fn excluded(major: u32) -> u8 {
    u8::from(major >= 21)
}

/// Pack200's UNSIGNED5: a byte below 192 ends a number; each byte adds its value (less the
/// excluded bytes) shifted 6 bits further; five bytes at most.
pub(super) struct Unsigned5<'a> {
    pub bytes: &'a [u8],
    pub excluded: u8,
}

impl Unsigned5<'_> {
    pub fn next(&mut self) -> Option<u32> {
        const LOW: u8 = 192;
        let mut sum = 0u32;
        for i in 0..5 {
            let (&b, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            let value = b.checked_sub(self.excluded)?;
            sum = sum.wrapping_add(u32::from(value) << (6 * i));
            if b < LOW {
                return Some(sum);
            }
        }
        Some(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::Unsigned5;

    #[test]
    fn unsigned5_reads_pack200_numbers() {
        // 5; 191; 192 + 64 * 1 = 256 (bytes 192, 1); and with one byte excluded, 1 as 2.
        let mut s = Unsigned5 { bytes: &[5, 191, 192, 1], excluded: 0 };
        assert_eq!((s.next(), s.next(), s.next(), s.next()), (Some(5), Some(191), Some(256), None));
        let mut s = Unsigned5 { bytes: &[2, 0], excluded: 1 };
        assert_eq!((s.next(), s.next()), (Some(1), None), "an excluded byte is no number");
    }
}
