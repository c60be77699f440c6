//! Walking one of HotSpot's self-description tables (`vmstructs.rs`): its array, entry by entry
//! in batches until the end mark or the cap, and the names its entries point to.

use std::collections::HashMap;

use crate::collect::remote::RemoteMemory;

/// Entries read per table at most (JDK 17 has about 2,000 fields, 800 types, 800 constants).
pub const MAX_ENTRIES: usize = 20_000;
/// Longest name read (the longest type strings are about 60 bytes).
const MAX_NAME: usize = 256;
/// Largest entry stride believed (entries are six words at most).
const MAX_STRIDE: u64 = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TablesError {
    #[error("cannot read {what} at {at:#x}")]
    Read { what: &'static str, at: u64 },
    #[error("{what}: entries of {stride} bytes, with a field at {offset}: not HotSpot's tables")]
    Layout { what: &'static str, stride: u64, offset: u64 },
}

pub enum Entry {
    Next,
    End,
}

/// One table: where its array is, its entries' stride and the offsets of their fields.
pub struct Table<const N: usize> {
    what: &'static str,
    array: u64,
    stride: u64,
    offsets: [u64; N],
}

impl<const N: usize> Table<N> {
    /// `symbols`: the table's pointer, then each field's offset word, then the stride's word:
    /// `N` = `M - 2` fields.
    pub fn open<const M: usize>(
        m: &dyn RemoteMemory,
        what: &'static str,
        symbols: &[u64; M],
    ) -> Result<Self, TablesError> {
        debug_assert_eq!(N + 2, M, "a table's symbols are its pointer, its fields' offsets and its stride");
        let read = |at: u64| m.u64(at).map_err(|_| TablesError::Read { what, at });
        let array = read(symbols[0])?;
        let stride = read(symbols[M - 1])?;
        let mut offsets = [0; N];
        for (slot, &at) in offsets.iter_mut().zip(&symbols[1..M - 1]) {
            *slot = read(at)?;
        }
        if stride == 0 || stride > MAX_STRIDE || offsets.iter().any(|&o| o.saturating_add(8) > stride) {
            let offset = offsets.iter().copied().max().unwrap_or(0);
            return Err(TablesError::Layout { what, stride, offset });
        }
        Ok(Self { what, array, stride, offsets })
    }

    pub fn layout(&self) -> [u64; N] {
        self.offsets
    }

    /// Hands each entry's bytes to `f` until it says the table ended, or `MAX_ENTRIES`.
    /// Entries are read 64 at a time.
    pub fn each(
        &self,
        m: &dyn RemoteMemory,
        truncated: &mut bool,
        mut f: impl FnMut(&[u8]) -> Entry,
    ) -> Result<(), TablesError> {
        const BATCH: usize = 64;
        let stride = self.stride as usize;
        let mut buf = vec![0u8; stride * BATCH];
        for first in (0..MAX_ENTRIES).step_by(BATCH) {
            let at = self.array.wrapping_add((first * stride) as u64);
            // Near the end of its mapping, the last batch may not be readable whole.
            let n = if m.read(at, &mut buf).is_ok() {
                BATCH
            } else {
                let one = &mut buf[..stride];
                m.read(at, one).map_err(|_| TablesError::Read { what: self.what, at })?;
                1
            };
            let n = n.min(MAX_ENTRIES - first);
            for entry in buf[..n * stride].chunks_exact(stride) {
                if let Entry::End = f(entry) {
                    return Ok(());
                }
            }
            if n == 1 {
                // Read on one at a time from here.
                return self.each_from(m, first + 1, truncated, f);
            }
        }
        *truncated = true;
        Ok(())
    }

    fn each_from(
        &self,
        m: &dyn RemoteMemory,
        from: usize,
        truncated: &mut bool,
        mut f: impl FnMut(&[u8]) -> Entry,
    ) -> Result<(), TablesError> {
        let mut entry = vec![0u8; self.stride as usize];
        for i in from..MAX_ENTRIES {
            let at = self.array.wrapping_add(i as u64 * self.stride);
            m.read(at, &mut entry).map_err(|_| TablesError::Read { what: self.what, at })?;
            if let Entry::End = f(&entry) {
                return Ok(());
            }
        }
        *truncated = true;
        Ok(())
    }
}

pub fn word(entry: &[u8], offset: u64) -> Option<u64> {
    crate::collect::remote::field_u64(entry, offset)
}

/// Names read so far, by address: the same literal is shared by many entries.
#[derive(Default)]
pub struct Names(HashMap<u64, Option<String>>);

impl Names {
    pub fn get(&mut self, m: &dyn RemoteMemory, at: u64) -> Option<String> {
        self.0.entry(at).or_insert_with(|| c_string(m, at)).clone()
    }
}

/// The string at `at`, from `cache` (the JVM's static strings, by address) or read once into it.
pub fn cached_c_string(
    cache: &mut std::collections::HashMap<u64, std::sync::Arc<str>>,
    m: &dyn RemoteMemory,
    at: u64,
) -> Option<std::sync::Arc<str>> {
    if let Some(known) = cache.get(&at) {
        return Some(known.clone());
    }
    let text: std::sync::Arc<str> = c_string(m, at)?.into();
    cache.insert(at, text.clone());
    Some(text)
}

/// The NUL-terminated string at `at`, read in pieces that never cross a 32-byte boundary (so
/// never a page the string does not reach); None past `MAX_NAME` bytes or if not UTF-8.
pub fn c_string(m: &dyn RemoteMemory, at: u64) -> Option<String> {
    const PIECE: u64 = 32;
    let mut bytes = Vec::new();
    let mut next = at;
    while bytes.len() < MAX_NAME {
        let len = PIECE - next % PIECE;
        let mut piece = vec![0u8; len as usize];
        m.read(next, &mut piece).ok()?;
        if let Some(end) = piece.iter().position(|&b| b == 0) {
            bytes.extend_from_slice(&piece[..end]);
            return String::from_utf8(bytes).ok();
        }
        bytes.extend_from_slice(&piece);
        next = next.checked_add(len)?;
    }
    None
}
