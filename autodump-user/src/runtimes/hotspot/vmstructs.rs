//! HotSpot's description of itself, read from a live JVM: the tables `libjvm.so` exports for
//! the serviceability agent (`vmStructs.cpp`). `gHotSpotVMStructs` lists each field the agent may
//! read (its type, name, and offset, or address when static), `gHotSpotVMTypes` each type's size
//! and superclass, `gHotSpotVMIntConstants` and `gHotSpotVMLongConstants` named constants. How
//! each table's entries are laid out is itself exported (`gHotSpotVMStructEntryTypeNameOffset`,
//! ..., `...ArrayStride`), so nothing here depends on the JDK's version.
//!
//! The layout words are set when libjvm is initialised, so everything is read from the process.
//! An entry whose name cannot be read is counted and skipped; every table and string is capped.

use std::collections::HashMap;

use super::tables::{word, Entry, Names, Table};
pub use super::tables::{TablesError, MAX_ENTRIES};
use crate::collect::remote::RemoteMemory;

/// The exported symbols, by name: the four tables, then each one's layout words.
pub const STRUCTS: [&str; 8] = [
    "gHotSpotVMStructs",
    "gHotSpotVMStructEntryTypeNameOffset",
    "gHotSpotVMStructEntryFieldNameOffset",
    "gHotSpotVMStructEntryTypeStringOffset",
    "gHotSpotVMStructEntryIsStaticOffset",
    "gHotSpotVMStructEntryOffsetOffset",
    "gHotSpotVMStructEntryAddressOffset",
    "gHotSpotVMStructEntryArrayStride",
];
pub const TYPES: [&str; 5] = [
    "gHotSpotVMTypes",
    "gHotSpotVMTypeEntryTypeNameOffset",
    "gHotSpotVMTypeEntrySuperclassNameOffset",
    "gHotSpotVMTypeEntrySizeOffset",
    "gHotSpotVMTypeEntryArrayStride",
];
pub const INTS: [&str; 4] = [
    "gHotSpotVMIntConstants",
    "gHotSpotVMIntConstantEntryNameOffset",
    "gHotSpotVMIntConstantEntryValueOffset",
    "gHotSpotVMIntConstantEntryArrayStride",
];
pub const LONGS: [&str; 4] = [
    "gHotSpotVMLongConstants",
    "gHotSpotVMLongConstantEntryNameOffset",
    "gHotSpotVMLongConstantEntryValueOffset",
    "gHotSpotVMLongConstantEntryArrayStride",
];

/// Where each exported symbol is in the process (the file's address plus the load bias), in the
/// order of `STRUCTS`, `TYPES`, `INTS` and `LONGS`.
#[derive(Clone, Debug)]
pub struct Exports {
    pub structs: [u64; 8],
    pub types: [u64; 5],
    pub ints: [u64; 4],
    pub longs: [u64; 4],
}

impl Exports {
    /// The symbols' addresses from `address_of` (a file's symbol table, biased); None when any
    /// is missing: not a HotSpot libjvm.
    pub fn find(address_of: impl Fn(&str) -> Option<u64>) -> Option<Self> {
        fn all<const N: usize>(names: [&str; N], address_of: &impl Fn(&str) -> Option<u64>) -> Option<[u64; N]> {
            let mut out = [0; N];
            for (slot, name) in out.iter_mut().zip(names) {
                *slot = address_of(name)?;
            }
            Some(out)
        }
        Some(Self {
            structs: all(STRUCTS, &address_of)?,
            types: all(TYPES, &address_of)?,
            ints: all(INTS, &address_of)?,
            longs: all(LONGS, &address_of)?,
        })
    }

    /// Every address shifted by `bias` (file addresses to the process's).
    pub fn biased(&self, bias: u64) -> Self {
        let shift = |a: &mut u64| *a = a.wrapping_add(bias);
        let mut out = self.clone();
        out.structs.iter_mut().chain(&mut out.types).chain(&mut out.ints).chain(&mut out.longs).for_each(shift);
        out
    }
}

/// Where a field is: at an offset in its type, or (static) at an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Offset(u64),
    Static(u64),
}

/// A type's size and superclass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type {
    pub size: u64,
    pub superclass: Option<String>,
}

/// The tables of one JVM.
#[derive(Debug, Default)]
pub struct VmStructs {
    /// (type, field) → where.
    pub fields: HashMap<(String, String), Field>,
    pub types: HashMap<String, Type>,
    pub int_constants: HashMap<String, i64>,
    pub long_constants: HashMap<String, i64>,
    /// Entries skipped: a name that could not be read.
    pub unreadable: u32,
    /// A table ended at `MAX_ENTRIES` without its end mark.
    pub truncated: bool,
}

impl VmStructs {
    /// Reads the four tables through `m`, at the (biased) `exports`.
    pub fn read(m: &dyn RemoteMemory, exports: &Exports) -> Result<Self, TablesError> {
        let mut names = Names::default();
        let mut out = VmStructs::default();
        let mut skipped = 0;
        let structs = Table::open(m, "gHotSpotVMStructs", &exports.structs)?;
        // type name, field name, type string, is static, offset, address.
        let [ty, field, _, is_static, offset, address] = structs.layout();
        structs.each(m, &mut out.truncated, |entry| {
            let Some(owner) = word(entry, ty) else { return Entry::End };
            if owner == 0 {
                return Entry::End;
            }
            let (Some(owner), Some(name)) = (names.get(m, owner), word(entry, field).and_then(|f| names.get(m, f)))
            else {
                skipped += 1;
                return Entry::Next;
            };
            let at = if word(entry, is_static).is_some_and(|s| s & 0xffff_ffff != 0) {
                Field::Static(word(entry, address).unwrap_or(0))
            } else {
                Field::Offset(word(entry, offset).unwrap_or(0))
            };
            out.fields.insert((owner, name), at);
            Entry::Next
        })?;
        let types = Table::open(m, "gHotSpotVMTypes", &exports.types)?;
        let [ty, superclass, size] = types.layout();
        types.each(m, &mut out.truncated, |entry| {
            let name = match word(entry, ty) {
                Some(0) | None => return Entry::End,
                Some(at) => names.get(m, at),
            };
            let Some(name) = name else {
                skipped += 1;
                return Entry::Next;
            };
            let superclass = word(entry, superclass).filter(|&a| a != 0).and_then(|a| names.get(m, a));
            out.types.insert(name, Type { size: word(entry, size).unwrap_or(0), superclass });
            Entry::Next
        })?;
        for (what, table, into) in [
            ("gHotSpotVMIntConstants", &exports.ints, &mut out.int_constants),
            ("gHotSpotVMLongConstants", &exports.longs, &mut out.long_constants),
        ] {
            let constants = Table::open(m, what, table)?;
            let [name, value] = constants.layout();
            let int = what.contains("Int");
            constants.each(m, &mut out.truncated, |entry| {
                let name = match word(entry, name) {
                    Some(0) | None => return Entry::End,
                    Some(at) => names.get(m, at),
                };
                let Some(name) = name else {
                    skipped += 1;
                    return Entry::Next;
                };
                let value = word(entry, value).unwrap_or(0);
                // An int constant is an int32_t: its upper half is padding.
                into.insert(name, if int { i64::from(value as u32 as i32) } else { value as i64 });
                Entry::Next
            })?;
        }
        out.unreadable = skipped;
        Ok(out)
    }

    /// A field's offset in its type (not a static).
    pub fn offset(&self, ty: &str, field: &str) -> Option<u64> {
        match self.fields.get(&(ty.to_string(), field.to_string()))? {
            Field::Offset(o) => Some(*o),
            Field::Static(_) => None,
        }
    }

    /// A field of `ty` or of the nearest superclass that declares it (`nmethod::_method` is
    /// `CompiledMethod`'s before JDK 23), and the type that does.
    pub fn inherited<'a>(&'a self, ty: &'a str, field: &str) -> Option<(&'a str, Field)> {
        let mut ty = ty;
        // A chain longer than the table is a cycle in garbage.
        for _ in 0..=self.types.len() {
            if let Some(&at) = self.fields.get(&(ty.to_string(), field.to_string())) {
                return Some((ty, at));
            }
            ty = self.types.get(ty)?.superclass.as_deref()?;
        }
        None
    }

    /// A copy whose statics' addresses are moved by the load bias: added (`to_process`: a
    /// file's tables for one process), or taken away (one process's tables for the file).
    pub fn rebased(&self, bias: u64, to_process: bool) -> Self {
        let fields = self
            .fields
            .iter()
            .map(|(key, &at)| {
                let at = match at {
                    Field::Static(a) if to_process => Field::Static(a.wrapping_add(bias)),
                    Field::Static(a) => Field::Static(a.wrapping_sub(bias)),
                    offset => offset,
                };
                (key.clone(), at)
            })
            .collect();
        Self {
            fields,
            types: self.types.clone(),
            int_constants: self.int_constants.clone(),
            long_constants: self.long_constants.clone(),
            unreadable: self.unreadable,
            truncated: self.truncated,
        }
    }

    /// A field's offset, or a static's address, declared by `ty` or a superclass.
    pub fn value(&self, ty: &str, field: &str) -> Option<u64> {
        self.inherited(ty, field).map(|(_, f)| match f {
            Field::Offset(v) | Field::Static(v) => v,
        })
    }

    /// A field's offset (not a static), declared by `ty` or a superclass.
    pub fn inherited_offset(&self, ty: &str, field: &str) -> Option<u64> {
        match self.inherited(ty, field)?.1 {
            Field::Offset(o) => Some(o),
            Field::Static(_) => None,
        }
    }

    /// Fields that are statics.
    pub fn statics(&self) -> usize {
        self.fields.values().filter(|f| matches!(f, Field::Static(_))).count()
    }

    /// A static field's address.
    pub fn address(&self, ty: &str, field: &str) -> Option<u64> {
        match self.fields.get(&(ty.to_string(), field.to_string()))? {
            Field::Static(a) => Some(*a),
            Field::Offset(_) => None,
        }
    }

    pub fn size(&self, ty: &str) -> Option<u64> {
        self.types.get(ty).map(|t| t.size)
    }

    /// A constant, int or long.
    pub fn constant(&self, name: &str) -> Option<i64> {
        self.int_constants.get(name).or_else(|| self.long_constants.get(name)).copied()
    }
}

#[cfg(test)]
#[path = "vmstructs_tests.rs"]
mod tests;
