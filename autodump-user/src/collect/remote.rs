//! Reads another process's memory with `process_vm_readv`, without stopping it. Every read is
//! bounded; a short read is an error, never a partly filled buffer taken as data.
//!
//! The runtime readers (Go, Python) see memory only through [`RemoteMemory`], so that they can
//! also be run over a byte image: the tests and the fuzz targets feed them garbage.

/// A read that could not be done whole, at this address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot read target memory at {0:#x}")]
pub struct ReadError(pub u64);

/// Largest single read (a guard against garbage lengths).
const MAX_READ: usize = 1 << 20;
/// iovecs per syscall (the kernel's IOV_MAX).
const IOV_MAX: usize = 1024;

/// Memory of the process being read, which may change or vanish at any moment.
pub trait RemoteMemory: Send + Sync {
    /// Fills `buf` from `addr`, whole or not at all.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError>;

    fn u64(&self, addr: u64) -> Result<u64, ReadError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The word at `offset` from `base`; an address that wraps is simply unreadable.
    fn field(&self, base: u64, offset: u64) -> Result<u64, ReadError> {
        self.u64(base.wrapping_add(offset))
    }

    fn i32(&self, addr: u64) -> Result<i32, ReadError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(i32::from_le_bytes(b))
    }

    /// Reads `len` bytes at each address. A block that cannot be read whole comes back as None.
    fn read_many(&self, addrs: &[u64], len: usize) -> Vec<Option<Vec<u8>>> {
        addrs
            .iter()
            .map(|&a| {
                let mut buf = vec![0u8; len];
                self.read(a, &mut buf).ok().map(|_| buf)
            })
            .collect()
    }
}

/// A byte image of memory starting at `base`; reads outside it fail.
pub struct ImageMemory {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl RemoteMemory for ImageMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let start = addr.checked_sub(self.base).and_then(|o| usize::try_from(o).ok());
        let src = start.and_then(|s| self.bytes.get(s..s.checked_add(buf.len())?)).ok_or(ReadError(addr))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A live process's memory, through `process_vm_readv`.
pub struct ProcessMemory {
    pid: libc::pid_t,
}

impl ProcessMemory {
    pub fn new(pid: u32) -> Self {
        Self { pid: pid as libc::pid_t }
    }
}

impl RemoteMemory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        if buf.len() > MAX_READ || addr == 0 {
            return Err(ReadError(addr));
        }
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: both iovecs describe valid memory: `buf` locally; the remote side is checked
        // by the kernel, which returns an error instead of faulting.
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        if n != buf.len() as isize {
            return Err(ReadError(addr));
        }
        Ok(())
    }

    /// Many blocks per syscall.
    fn read_many(&self, addrs: &[u64], len: usize) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::with_capacity(addrs.len());
        for chunk in addrs.chunks(IOV_MAX) {
            let mut bufs: Vec<Vec<u8>> = chunk.iter().map(|_| vec![0u8; len]).collect();
            let local: Vec<libc::iovec> =
                bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: len }).collect();
            let remote: Vec<libc::iovec> =
                chunk.iter().map(|&a| libc::iovec { iov_base: a as *mut libc::c_void, iov_len: len }).collect();
            // SAFETY: as in `read`; the kernel stops at the first remote iovec it cannot read.
            let n = unsafe {
                libc::process_vm_readv(self.pid, local.as_ptr(), chunk.len() as _, remote.as_ptr(), chunk.len() as _, 0)
            };
            let whole = if n > 0 { n as usize / len } else { 0 };
            for (i, mut buf) in bufs.into_iter().enumerate() {
                if i < whole {
                    out.push(Some(buf));
                } else {
                    // The kernel stopped at the first block it could not read: read the rest
                    // one by one, so one bad address does not hide the good ones after it.
                    out.push(self.read(chunk[i], &mut buf).ok().map(|_| buf));
                }
            }
        }
        out
    }
}

/// Reads the `len` bytes at each address and hands each block that could be read to `f` with
/// its index. Neighbours (objects from one span, as the runtime allocates g's) are read as one
/// range of at most `MAX_RUN` bytes, which costs the kernel far less than a block each; a range
/// that cannot be read whole is read block by block.
pub fn read_near(m: &dyn RemoteMemory, addrs: &[u64], len: usize, mut f: impl FnMut(usize, &[u8])) {
    let mut order: Vec<usize> = (0..addrs.len()).collect();
    order.sort_unstable_by_key(|&i| addrs[i]);
    let (len64, mut buf) = (len as u64, Vec::new());
    let mut rest = &order[..];
    while let Some(&first) = rest.first() {
        let start = addrs[first];
        let mut n = 1;
        while let Some(&next) = rest.get(n) {
            let (prev, at) = (addrs[rest[n - 1]], addrs[next]);
            let end = at.checked_add(len64).and_then(|e| e.checked_sub(start));
            if at.saturating_sub(prev) > 2 * len64 || end.is_none_or(|e| e > MAX_RUN as u64) {
                break;
            }
            n += 1;
        }
        let (run, last) = (&rest[..n], addrs[rest[n - 1]]);
        rest = &rest[n..];
        buf.resize((last - start + len64) as usize, 0);
        if m.read(start, &mut buf).is_ok() {
            for &i in run {
                let at = (addrs[i] - start) as usize;
                f(i, &buf[at..at + len]);
            }
            continue;
        }
        let singles: Vec<u64> = run.iter().map(|&i| addrs[i]).collect();
        for (&i, block) in run.iter().zip(m.read_many(&singles, len)) {
            if let Some(block) = block {
                f(i, &block);
            }
        }
    }
}

/// Largest range `read_near` reads at once.
const MAX_RUN: usize = 64 << 10;

/// Little-endian integer at `offset` of `block`, if it fits.
pub fn field_u64(block: &[u8], offset: u64) -> Option<u64> {
    Some(u64::from_le_bytes(field::<8>(block, offset)?))
}

pub fn field_u32(block: &[u8], offset: u64) -> Option<u32> {
    Some(u32::from_le_bytes(field::<4>(block, offset)?))
}

fn field<const N: usize>(block: &[u8], offset: u64) -> Option<[u8; N]> {
    let start = usize::try_from(offset).ok()?;
    block.get(start..start.checked_add(N)?)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_rejects_bad_addresses() {
        let value: u64 = 0x1122_3344_5566_7788;
        let mem = ProcessMemory::new(std::process::id());
        assert_eq!(mem.u64(&value as *const u64 as u64).unwrap(), value);
        assert!(mem.u64(0).is_err());
        assert!(mem.u64(8).is_err(), "unmapped");
        let data = [1u64, 2, 3];
        let addrs: Vec<u64> =
            data.iter().map(|v| v as *const u64 as u64).chain([16]).chain([&data[0] as *const u64 as u64]).collect();
        let got: Vec<Option<u64>> =
            mem.read_many(&addrs, 8).into_iter().map(|b| b.map(|b| field_u64(&b, 0).unwrap())).collect();
        assert_eq!(
            got,
            vec![Some(1), Some(2), Some(3), None, Some(1)],
            "a bad address does not hide the ones after it"
        );
    }

    #[test]
    fn images_read_whole_blocks_or_nothing() {
        let mem = ImageMemory { base: 0x1000, bytes: (0u8..16).collect() };
        assert_eq!(mem.u64(0x1008).unwrap(), u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]));
        assert!(mem.u64(0x1009).is_err(), "runs past the end");
        assert!(mem.u64(0xfff).is_err(), "starts before the base");
        assert!(mem.u64(u64::MAX).is_err());
        assert_eq!(mem.read_many(&[0x1000, 0x2000], 4), vec![Some(vec![0, 1, 2, 3]), None]);
    }

    #[test]
    fn neighbours_are_read_as_one_and_a_bad_range_block_by_block() {
        let mem = ImageMemory { base: 0x1000, bytes: (0u8..=255).collect() };
        let mut got = Vec::new();
        // Out of order, one past the image, one far away but inside it, one straddling its end.
        read_near(&mem, &[0x1010, 0x1000, 0x2000, 0x10f0, 0x10fe], 4, |i, b| got.push((i, b.to_vec())));
        got.sort();
        assert_eq!(got, vec![(0, vec![16, 17, 18, 19]), (1, vec![0, 1, 2, 3]), (3, vec![240, 241, 242, 243])]);
    }

    #[test]
    fn fields_are_bounds_checked() {
        let block = [1u8, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
        assert_eq!(field_u64(&block, 0), Some(1));
        assert_eq!(field_u32(&block, 8), Some(2));
        assert_eq!(field_u64(&block, 8), None);
        assert_eq!(field_u32(&block, u64::MAX), None);
    }
}
