//! What walking and naming Java frames reads of a JVM, as its tables give it, and the first
//! live state read through them: the release and the code cache's bounds.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{tables::c_string, vmstructs::VmStructs};
use crate::collect::remote::RemoteMemory;

/// Fields ("Type::field": an offset, or a static's address) and types (a size) the walk and the
/// names read: where compiled code is (the code cache, its heaps and their segment maps), a
/// code blob's frame size, and from a frame's `Method*` its class and method names.
pub const NEEDED: &[&str] = &[
    "CodeCache::_heaps",
    "CodeCache::_low_bound",
    "CodeCache::_high_bound",
    "CodeHeap::_memory",
    "CodeHeap::_segmap",
    "CodeHeap::_log2_segment_size",
    "VirtualSpace::_low",
    "VirtualSpace::_high",
    "CodeBlob::_name",
    "CodeBlob::_frame_size",
    "CodeBlob::_size",
    "nmethod::_method",
    "Method::_constMethod",
    "ConstMethod::_constants",
    "ConstMethod::_name_index",
    "ConstMethod::_signature_index",
    "ConstantPool::_pool_holder",
    "Klass::_name",
    "Symbol::_length",
    "Symbol::_body",
    "Abstract_VM_Version::_s_vm_release",
    "ConstantPool",
    "Method",
    "ConstMethod",
];

/// What of [`NEEDED`] a JVM's tables give, and what they lack.
pub struct Needed {
    pub found: BTreeMap<String, u64>,
    pub missing: Vec<String>,
}

impl Needed {
    pub fn check(vm: &VmStructs) -> Self {
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for &name in NEEDED {
            let value = match name.split_once("::") {
                Some((ty, field)) => vm.value(ty, field),
                None => vm.size(name),
            };
            match value {
                Some(v) => drop(found.insert(name.to_string(), v)),
                None => missing.push(name.to_string()),
            }
        }
        Self { found, missing }
    }
}

/// `Abstract_VM_Version::_s_vm_release`, the string `java -version` prints as the VM's build.
pub fn vm_release(m: &dyn RemoteMemory, vm: &VmStructs) -> Option<String> {
    let at = vm.address("Abstract_VM_Version", "_s_vm_release")?;
    c_string(m, m.u64(at).ok()?)
}

/// Where the JVM's compiled code is: every code heap lies in [low, high).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CodeCache {
    pub low: u64,
    pub high: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeCacheError {
    #[error("the tables do not say where the code cache's bounds are")]
    NotInTables,
    #[error("cannot read the code cache's bounds at {0:#x}")]
    Read(u64),
    #[error("the code cache's bounds are not a range: {0:#x}..{1:#x}")]
    NotARange(u64, u64),
}

/// Largest code cache believed (HotSpot caps `ReservedCodeCacheSize` at 2 GiB).
const MAX_CODE_CACHE: u64 = 2 << 30;

impl CodeCache {
    pub fn read(m: &dyn RemoteMemory, vm: &VmStructs) -> Result<Self, CodeCacheError> {
        let (Some(low), Some(high)) = (vm.address("CodeCache", "_low_bound"), vm.address("CodeCache", "_high_bound"))
        else {
            return Err(CodeCacheError::NotInTables);
        };
        let low = m.u64(low).map_err(|_| CodeCacheError::Read(low))?;
        let high = m.u64(high).map_err(|_| CodeCacheError::Read(high))?;
        if low == 0 || high <= low || high - low > MAX_CODE_CACHE {
            return Err(CodeCacheError::NotARange(low, high));
        }
        Ok(Self { low, high })
    }
}
