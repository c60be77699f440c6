//! The `UNWIND_ROWS` array as the agent writes it: mapped into the agent's memory, each file's
//! rows copied after the last file's.

use std::{os::fd::AsRawFd, ptr::NonNull};

use autodump_common::unwind::UnwindRow;
use aya::maps::MapData;

/// The `UNWIND_ROWS` array, mapped into the agent.
pub struct RowStore {
    rows: NonNull<UnwindRow>,
    /// The mapping's size (whole pages).
    pub bytes: usize,
    capacity: u32,
    used: u32,
    _map: MapData,
}

// SAFETY: the mapping is owned by this value and only written through `&mut self`.
unsafe impl Send for RowStore {}

impl RowStore {
    pub fn map(map: MapData, capacity: u32) -> std::io::Result<Self> {
        use std::os::fd::AsFd;
        // SAFETY: a plain query.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = (capacity as usize * size_of::<UnwindRow>()).div_ceil(page) * page;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: maps the array's values (created BPF_F_MMAPABLE with `capacity` 16-byte
        // entries) shared and writable; unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let rows = NonNull::new(ptr.cast()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Self { rows, bytes, capacity, used: 0, _map: map })
    }

    /// Copies `rows` after the last file's; their first index, or None without room.
    pub fn append(&mut self, rows: &[UnwindRow]) -> Option<u32> {
        let start = self.reserve(u32::try_from(rows.len()).ok()?)?;
        self.write(start, rows);
        Some(start)
    }

    /// Sets `count` rows aside after the last; their first index, or None without room.
    pub fn reserve(&mut self, count: u32) -> Option<u32> {
        let start = self.used;
        let end = start.checked_add(count)?;
        if end > self.capacity {
            return None;
        }
        self.used = end;
        Some(start)
    }

    /// The rows `[start, start + count)`, if they were written.
    pub fn rows(&self, start: u32, count: u32) -> Option<&[UnwindRow]> {
        let end = start.checked_add(count).filter(|&end| end <= self.used)?;
        // SAFETY: inside what was set aside, inside the mapping, which lives as long as `self`;
        // the agent writes only through `&mut self`.
        Some(unsafe { std::slice::from_raw_parts(self.rows.as_ptr().add(start as usize), (end - start) as usize) })
    }

    /// Copies `rows` to index `start`, within what was set aside (the rest is dropped).
    pub fn write(&mut self, start: u32, rows: &[UnwindRow]) {
        let room = self.used.saturating_sub(start) as usize;
        let rows = &rows[..rows.len().min(room)];
        // SAFETY: [start, start + rows.len()) lies inside what was reserved, inside the mapping;
        // probes only read rows a mapping table names, and a table names these only after this
        // copy (the caller writes into a block no table names now).
        unsafe { self.rows.as_ptr().add(start as usize).copy_from_nonoverlapping(rows.as_ptr(), rows.len()) };
    }
}

impl Drop for RowStore {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped.
        unsafe { libc::munmap(self.rows.as_ptr().cast(), self.bytes) };
    }
}
