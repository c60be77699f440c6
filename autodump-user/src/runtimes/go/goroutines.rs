//! Every goroutine, read from outside: its state, wait reason and stack, walked by frame pointers
//! from its saved registers; stacks of goroutines parked where they were at the last read are
//! not walked again.

use super::{
    GoError, GoRuntime, G_DEAD, G_DEAD_EXTRA, G_IDLE, G_LEAKED, G_SCAN, G_SYSCALL, G_WAITING, MAX_DUMPED_GOROUTINES,
    MAX_FRAMES, MAX_GOROUTINES,
};
use crate::collect::remote::{field_u32, field_u64, read_near};

/// g's read per batch (the kernel's IOV_MAX): about 400 KiB of them at a time.
const G_CHUNK: usize = 1024;

/// One goroutine: its id, its state (wait reason when waiting), since when it waits (the
/// runtime's nanotime, 0 if no GC has seen it wait), and its return addresses, innermost first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goroutine {
    pub goid: u64,
    pub state: String,
    /// Waiting (parked), not running, runnable or in a system call.
    pub waiting: bool,
    pub waitsince: u64,
    /// How many times it has stopped running, mod 256 (`trackingSeq`): unchanged between two
    /// reads, it has not run in between.
    pub runs: u8,
    pub frames: std::sync::Arc<[u64]>,
}

/// Stacks walked at the last read, by goroutine id with the (pc, bp) it was parked at: a
/// goroutine still parked at the same place has the same stack, and is not walked again.
#[derive(Default)]
pub struct StackCache {
    walked: foldhash::HashMap<u64, (ParkedAt, std::sync::Arc<[u64]>)>,
}

/// Where a goroutine was parked: its saved pc and bp, and its run count.
type ParkedAt = (u64, u64, u8);

/// What a read of the goroutines saw besides them.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadStats {
    /// User goroutines alive.
    pub total: usize,
    /// Stacks walked this read (the rest came from the cache).
    pub walked: usize,
}

impl GoRuntime {
    /// Every user goroutine with its stack, walked by frame pointers from its saved registers.
    /// Goroutines that are dead, or the runtime's own, are left out (as NumGoroutine does).
    pub fn goroutines(&self) -> Result<Vec<Goroutine>, GoError> {
        self.goroutines_sampled(usize::MAX, &mut StackCache::default()).map(|(gs, _)| gs)
    }

    /// The same, at most `max` of them taken evenly from the list, with the stacks of goroutines
    /// parked where they were at the last read taken from `cache` (and the cache renewed).
    pub fn goroutines_sampled(
        &self,
        max: usize,
        cache: &mut StackCache,
    ) -> Result<(Vec<Goroutine>, ReadStats), GoError> {
        let m = &*self.memory;
        let len = m.u64(self.at.allglen)?.min(m.u64(self.at.allgs + 8)?);
        if len > MAX_GOROUTINES {
            return Err(GoError::Inconsistent(1));
        }
        if len > MAX_DUMPED_GOROUTINES {
            tracing::debug!(goroutines = len, "reading only the first {MAX_DUMPED_GOROUTINES} goroutines");
        }
        let len = len.min(MAX_DUMPED_GOROUTINES);
        let base = m.u64(self.at.allgs)?;
        // A chunk of g's at a time, so that 100,000 of them never sit in memory at once; only
        // what a walk needs is kept of each.
        let mut walks = Vec::new();
        let mut slots = vec![0u8; G_CHUNK * 8];
        for first in (0..len).step_by(G_CHUNK) {
            // allgs is one array: a chunk of it is one read.
            let n = (len - first).min(G_CHUNK as u64) as usize;
            let slots = &mut slots[..n * 8];
            m.read(base.wrapping_add(8 * first), slots)?;
            let pointers: Vec<u64> = slots.chunks_exact(8).filter_map(|b| field_u64(b, 0)).collect();
            let mut read: Vec<(usize, Walk)> = Vec::with_capacity(pointers.len());
            read_near(m, &pointers, self.off.g_size as usize, |i, b| read.extend(self.parked(b).map(|w| (i, w))));
            // In the list's order, as the runtime keeps it (about the order they were made in).
            read.sort_unstable_by_key(|(i, _)| *i);
            walks.extend(read.into_iter().map(|(_, w)| w));
        }
        let total = walks.len();
        if walks.len() > max {
            // Evenly over the list, so that every kind of goroutine keeps its share.
            let step = walks.len() as f64 / max as f64;
            walks = (0..max).map(|i| walks[(i as f64 * step) as usize].clone()).collect();
        }
        // A parked goroutine that has not moved keeps its stack: only the others are walked.
        for w in walks.iter_mut() {
            if let Some((parked, frames)) = cache.walked.get(&w.goid) {
                if *parked == (w.pc, w.bp_at_park, w.runs) && matches!(w.status, G_WAITING | G_LEAKED) {
                    w.cached = Some(frames.clone());
                    w.bp = 0;
                }
            }
        }
        let walked = walks.iter().filter(|w| w.cached.is_none()).count();
        for w in walks.iter_mut().filter(|w| w.cached.is_none() && w.pc != 0 && !w.from_syscall) {
            w.frames.push(w.pc);
        }
        self.walk_stacks(&mut walks);
        let mut stacks = foldhash::HashMap::with_capacity_and_hasher(walks.len(), Default::default());
        let mut fresh: foldhash::HashSet<std::sync::Arc<[u64]>> = Default::default();
        let goroutines: Vec<Goroutine> = walks
            .into_iter()
            .map(|w| {
                // Goroutines on one stack share it, so that it is hashed once downstream.
                let frames = w.cached.unwrap_or_else(|| match fresh.get(&w.frames[..]) {
                    Some(same) => std::sync::Arc::clone(same),
                    None => {
                        let frames: std::sync::Arc<[u64]> = w.frames.into();
                        fresh.insert(frames.clone());
                        frames
                    }
                });
                stacks.insert(w.goid, ((w.pc, w.bp_at_park, w.runs), frames.clone()));
                let state = self.state(w.status, w.reason);
                let waiting = w.status == G_WAITING || w.status == G_LEAKED;
                Goroutine { goid: w.goid, state, waiting, waitsince: w.waitsince, runs: w.runs, frames }
            })
            .collect();
        cache.walked = stacks;
        Ok((goroutines, ReadStats { total, walked }))
    }

    /// What a walk needs of one g, None for a dead goroutine or the runtime's own.
    fn parked(&self, block: &[u8]) -> Option<Walk> {
        let field = |o| field_u64(block, o).unwrap_or(0);
        let status = field_u32(block, self.off.g_status).unwrap_or(G_DEAD) & !G_SCAN;
        if matches!(status, G_DEAD | G_DEAD_EXTRA | G_IDLE) || self.is_system(field(self.off.g_startpc)) {
            return None;
        }
        let mut walk = Walk {
            goid: field(self.off.g_goid),
            status,
            reason: block.get(self.off.g_waitreason as usize).copied().unwrap_or(0),
            waitsince: field(self.off.g_waitsince),
            pc: field(self.off.g_sched_pc),
            bp_at_park: field(self.off.g_sched_bp),
            runs: block.get(self.off.g_trackingseq as usize).copied().unwrap_or(0),
            from_syscall: false,
            frames: Vec::new(),
            bp: field(self.off.g_sched_bp),
            stack: (field(self.off.g_stack_lo), field(self.off.g_stack_hi)),
            cached: None,
        };
        // In a system call on a runtime that did not save its frame pointer, the saved bp is
        // stale; the caller's bp lies just below syscallsp, where entersyscall pushed it, with
        // the return address into the caller above it: the walk starts there.
        if let (G_SYSCALL, Some(sp)) = (status, self.off.g_syscallsp) {
            (walk.from_syscall, walk.bp) = (true, field(sp).wrapping_sub(16));
        }
        Some(walk)
    }

    /// Walks all stacks a frame at a time, reading one level for every goroutine per batch:
    /// [bp] is the caller's bp and [bp+8] the return address (amd64 frame pointers).
    fn walk_stacks(&self, walks: &mut [Walk]) {
        for _ in 0..MAX_FRAMES {
            let live: Vec<usize> = (0..walks.len()).filter(|&i| walks[i].bp != 0).collect();
            if live.is_empty() {
                break;
            }
            let addrs: Vec<u64> = live.iter().map(|&i| walks[i].bp).collect();
            for (&i, block) in live.iter().zip(self.memory.read_many(&addrs, 16)) {
                let w = &mut walks[i];
                let (Some(next_bp), Some(ret)) =
                    (block.as_deref().and_then(|b| field_u64(b, 0)), block.as_deref().and_then(|b| field_u64(b, 8)))
                else {
                    w.bp = 0;
                    continue;
                };
                if ret == 0 || w.frames.len() >= MAX_FRAMES {
                    w.bp = 0;
                    continue;
                }
                w.frames.push(ret);
                // The chain must climb the goroutine's own stack, or it is garbage.
                w.bp = if next_bp > w.bp && next_bp < w.stack.1 && next_bp >= w.stack.0 { next_bp } else { 0 };
            }
        }
    }
}

#[derive(Clone)]
struct Walk {
    goid: u64,
    /// The g's status (scan bit cleared) and wait reason, named only for those kept.
    status: u32,
    reason: u8,
    waitsince: u64,
    /// Where it is parked: its saved pc and bp (`bp` moves as the walk climbs).
    pc: u64,
    bp_at_park: u64,
    runs: u8,
    /// Walked from syscallsp: the saved pc is stale and is not the first frame.
    from_syscall: bool,
    frames: Vec<u64>,
    bp: u64,
    stack: (u64, u64),
    /// The stack from the last read, when it has not moved since.
    cached: Option<std::sync::Arc<[u64]>>,
}
