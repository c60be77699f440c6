//! Drains a BPF hash map in a few syscalls instead of three per entry (list, read, delete):
//! `BPF_MAP_LOOKUP_AND_DELETE_BATCH` (Linux 5.6). aya 0.14 has no batch operations, so this
//! issues the bpf(2) command itself.

use std::{
    io,
    mem::{size_of, MaybeUninit},
    os::fd::{AsRawFd, BorrowedFd},
};

/// `enum bpf_cmd`'s BPF_MAP_LOOKUP_BATCH and BPF_MAP_LOOKUP_AND_DELETE_BATCH.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
/// Entries moved per syscall, at most. A hash bucket's entries must fit in one call, which any
/// map of ours does many times over.
const ENTRIES_PER_CALL: usize = 4096;
/// The buffers of one call, at most: below the allocator's threshold for mapping memory of its
/// own, so that each drain reuses heap pages rather than mapping and faulting in fresh ones
/// (4096 unwound stacks of 1 KiB were 4 MiB mapped and unmapped every interval).
const BYTES_PER_CALL: usize = 96 << 10;

/// `union bpf_attr`'s batch member (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Reads every entry of the hash map `map`, leaving them (a map the probes still write: an
/// entry may change or come and go meanwhile).
pub fn read_all<K: aya::Pod, V: aya::Pod>(map: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    batch(map, BPF_MAP_LOOKUP_BATCH, |k, v| out.push((*k, *v)))?;
    Ok(out)
}

/// Hands each entry of `map` to `each` (by reference, from the call's buffer), `command`
/// deleting them or not.
fn batch<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    command: libc::c_long,
    mut each: impl FnMut(&K, &V),
) -> io::Result<()> {
    let per_call = (BYTES_PER_CALL / (size_of::<K>() + size_of::<V>())).clamp(64, ENTRIES_PER_CALL);
    let mut keys: Vec<MaybeUninit<K>> = (0..per_call).map(|_| MaybeUninit::uninit()).collect();
    let mut values: Vec<MaybeUninit<V>> = (0..per_call).map(|_| MaybeUninit::uninit()).collect();
    // The hash map's batch cursor is a bucket index.
    let (mut cursor, mut next) = (0u32, 0u32);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const cursor as u64 },
            out_batch: &raw mut next as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: per_call as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers of `count` keys and values that outlive the call;
        // the kernel writes at most that many of each.
        let ret = unsafe { libc::syscall(libc::SYS_bpf, command, &raw mut attr, size_of::<BatchAttr>()) };
        // ENOENT: the walk reached the end (the last entries may still come with it).
        let done = match ret {
            0 => false,
            _ => match io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ENOENT) => true,
                e => return Err(e),
            },
        };
        let filled = (attr.count as usize).min(per_call);
        for i in 0..filled {
            // SAFETY: the kernel filled the first `filled` keys and values.
            unsafe { each(keys[i].assume_init_ref(), values[i].assume_init_ref()) };
        }
        if done {
            return Ok(());
        }
        cursor = next;
        first = false;
    }
}

/// Every entry of a map no probe writes to any more, deleted as read.
pub fn take_map<K: aya::Pod, V: aya::Pod>(
    map: &mut aya::maps::HashMap<aya::maps::MapData, K, V>,
) -> Result<Vec<(K, V)>, aya::maps::MapError> {
    let mut out = Vec::new();
    take_each(map, |k, v| out.push((*k, *v)))?;
    Ok(out)
}

/// As `take_map`, handing each entry to `each` from the call's buffer: for large values (an
/// unwound stack is 1 KiB), whose list would be mapped, faulted in and unmapped every drain.
pub fn take_each<K: aya::Pod, V: aya::Pod>(
    map: &mut aya::maps::HashMap<aya::maps::MapData, K, V>,
    each: impl FnMut(&K, &V),
) -> Result<(), aya::maps::MapError> {
    use std::os::fd::AsFd;
    let data = aya::maps::IterableMap::<K, V>::map(map);
    batch(data.fd().as_fd(), BPF_MAP_LOOKUP_AND_DELETE_BATCH, each)
        .map_err(|io_error| aya::sys::SyscallError { call: "bpf_map_lookup_and_delete_batch", io_error }.into())
}
