//! A Go program's heap profile, read from outside as `runtime.MemProfile` reads it: the runtime
//! keeps one bucket per allocating stack (`runtime.mbuckets`, linked by `allnext`), each a header,
//! the stack's PCs and a `memRecord`, whose `active` cycle holds what the last completed GC
//! published. The target is never stopped: every read is bounded, and a bucket that makes no
//! sense ends the walk, counted.

use super::{GoError, GoRuntime};
use crate::collect::remote::field_u64;

/// `runtime.bucket`: next, allnext, typ, hash, size, nstk (stable since Go 1.4).
const BUCKET_HEADER: u64 = 48;
const ALLNEXT: u64 = 8;
const TYP: u64 = 16;
const SIZE: u64 = 32;
const NSTK: u64 = 40;
/// `bucketType` of memory-profile buckets.
const MEM_PROFILE: u64 = 1;
/// `memRecord`: `active` and three `future` cycles, each allocs, frees (and before Go 1.26
/// alloc_bytes, free_bytes: `Addresses::heap_cycle_words`).
const CYCLES: u64 = 4;
/// Stack depth a bucket may have (the runtime's default is 32 before Go 1.23, 128 after).
pub const MAX_STACK: u64 = 1024;
/// Buckets read at most (a garbled list that loops, or an enormous profile): a service's heap
/// profile has thousands to tens of thousands.
pub const MAX_BUCKETS: usize = 200_000;
/// Header plus this many PCs and the record in one read; deeper stacks take a second read.
const SPECULATIVE_STACK: u64 = 32;

/// One allocating stack's totals, as `runtime.MemProfileRecord` has them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeapRecord {
    /// Return PCs, innermost first, one per logical (inlined or not) frame. Shared: snapshots
    /// of one process keep each distinct stack once (`heap_watch`).
    pub stack: std::sync::Arc<[u64]>,
    pub alloc_objects: u64,
    pub alloc_bytes: u64,
    pub free_objects: u64,
    pub free_bytes: u64,
}

#[derive(Clone, Debug, Default)]
pub struct HeapSnapshot {
    /// `runtime.MemProfileRate` when read: one sample per this many bytes allocated.
    pub rate: u64,
    pub records: Vec<HeapRecord>,
    /// Buckets that made no sense (wrong type, absurd depth, unreadable), which ended the walk.
    pub garbage: u64,
}

/// Why a Go program has no heap profile to read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeapOff {
    #[error(
        "memory profiling is off in this binary: it never references the memory profiler \
         (runtime/pprof, runtime.MemProfile), so the linker set runtime.disableMemoryProfiling; \
         the page-fault profile shows where memory grew"
    )]
    DisabledByLinker,
    #[error("memory profiling is off: runtime.MemProfileRate is 0; the page-fault profile shows where memory grew")]
    RateZero,
}

impl GoRuntime {
    /// Whether the runtime records a heap profile, from its flags; `Ok(rate)` when it does. A
    /// program may set `MemProfileRate` itself, after the linker's flag zeroed it: the rate
    /// decides, the flag explains a zero.
    pub fn heap_rate(&self) -> Result<Result<u64, HeapOff>, GoError> {
        let m = &*self.memory;
        let rate = m.u64(self.at.mem_profile_rate)? as i64;
        if rate > 0 {
            return Ok(Ok(rate as u64));
        }
        if let Some(flag) = self.at.disable_memory_profiling {
            let mut b = [0u8; 1];
            m.read(flag, &mut b)?;
            if b[0] != 0 {
                return Ok(Err(HeapOff::DisabledByLinker));
            }
        }
        Ok(Err(HeapOff::RateZero))
    }

    /// Every memory-profile bucket, with what `runtime.MemProfile` would report for it.
    pub fn heap(&self) -> Result<HeapSnapshot, GoError> {
        let rate = match self.heap_rate()? {
            Ok(rate) => rate,
            Err(_) => return Ok(HeapSnapshot::default()),
        };
        let m = &*self.memory;
        // Between a GC's mProf_NextCycle and its mProf_Flush, the cycle just completed sits in
        // `future[cycle % 3]`; MemProfile adds it to `active` first, and so does this.
        let pending = match self.at.mprof_cycle {
            Some(at) => Some((u64::from(m.i32(at)? as u32) >> 1) % 3),
            None => None,
        };
        let mut snapshot = HeapSnapshot { rate, ..Default::default() };
        let mut raw = Vec::new();
        let mut bucket = m.u64(self.at.mbuckets)?;
        while bucket != 0 && raw.len() < MAX_BUCKETS {
            match self.read_bucket(bucket) {
                Some((stack, cycles, size, next)) => {
                    raw.push((stack, cycles, size));
                    bucket = next;
                }
                None => {
                    snapshot.garbage += 1;
                    break;
                }
            }
        }
        // Byte counts are the object size times the counts; where the record holds them, they
        // must be just that, or the layout is not this Go's.
        let inconsistent = raw.iter().filter(|(_, c, size)| c[0][2] != c[0][0].wrapping_mul(*size)).count();
        if inconsistent > 0 {
            snapshot.garbage += inconsistent as u64;
        }
        // No GC has published anything yet (GOGC=off from the start): MemProfile then adds up
        // every cycle, and so does this.
        let nothing_published = raw.iter().all(|(_, c, _)| c[0][0] == 0 && c[0][1] == 0);
        for (stack, cycles, _) in raw {
            let mut totals = cycles[0];
            let add = |totals: &mut [u64; 4], cycle: &[u64; 4]| {
                for (t, c) in totals.iter_mut().zip(cycle) {
                    *t = t.wrapping_add(*c);
                }
            };
            match (nothing_published, pending) {
                (true, _) => cycles[1..].iter().for_each(|c| add(&mut totals, c)),
                (false, Some(index)) => add(&mut totals, &cycles[1 + index as usize]),
                (false, None) => {}
            }
            let [alloc_objects, free_objects, alloc_bytes, free_bytes] = totals;
            let stack = stack.into();
            snapshot.records.push(HeapRecord { stack, alloc_objects, alloc_bytes, free_objects, free_bytes });
        }
        Ok(snapshot)
    }

    /// One bucket's stack, its record's four cycles (active, then the three future ones: allocs,
    /// frees, alloc_bytes, free_bytes, the bytes computed from the object size where the record
    /// has none), its object size and the next bucket's address; None for a bucket that makes
    /// no sense.
    #[allow(clippy::type_complexity)]
    fn read_bucket(&self, at: u64) -> Option<(Vec<u64>, [[u64; 4]; 4], u64, u64)> {
        let m = &*self.memory;
        let words = self.at.heap_cycle_words.clamp(2, 4);
        let record_size = CYCLES * 8 * words;
        let speculative = BUCKET_HEADER + 8 * SPECULATIVE_STACK + record_size;
        let mut block = vec![0u8; speculative as usize];
        if m.read(at, &mut block).is_err() {
            block.truncate(BUCKET_HEADER as usize);
            m.read(at, &mut block).ok()?;
        }
        let (typ, nstk, next) = (field_u64(&block, TYP)?, field_u64(&block, NSTK)?, field_u64(&block, ALLNEXT)?);
        let size = field_u64(&block, SIZE)?;
        if typ != MEM_PROFILE || nstk == 0 || nstk > MAX_STACK {
            return None;
        }
        let body = BUCKET_HEADER + 8 * nstk + record_size;
        if (block.len() as u64) < body {
            block.resize(body as usize, 0);
            m.read(at.wrapping_add(BUCKET_HEADER), &mut block[BUCKET_HEADER as usize..]).ok()?;
        }
        let stack = (0..nstk).map(|i| field_u64(&block, BUCKET_HEADER + 8 * i)).collect::<Option<Vec<u64>>>()?;
        let record = BUCKET_HEADER + 8 * nstk;
        let mut cycles = [[0u64; 4]; 4];
        for (c, cycle) in cycles.iter_mut().enumerate() {
            let base = record + 8 * words * c as u64;
            let word = |i: u64| field_u64(&block, base + 8 * i);
            let (allocs, frees) = (word(0)?, word(1)?);
            *cycle = match words {
                4 => [allocs, frees, word(2)?, word(3)?],
                _ => [allocs, frees, allocs.wrapping_mul(size), frees.wrapping_mul(size)],
            };
        }
        Some((stack, cycles, size, next))
    }
}

/// `runtime/pprof`'s `scaleHeapSample`: a sampled (count, bytes) pair scaled to what it stands
/// for, given that an allocation of `avg` bytes is sampled with probability 1 - e^(-avg/rate).
pub fn unsample(count: u64, bytes: u64, rate: u64) -> (u64, u64) {
    if count == 0 || bytes == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count, bytes);
    }
    let average = bytes as f64 / count as f64;
    let scale = 1.0 / (1.0 - (-average / rate as f64).exp());
    ((count as f64 * scale) as u64, (bytes as f64 * scale) as u64)
}

#[cfg(test)]
#[path = "heap_tests.rs"]
mod tests;
