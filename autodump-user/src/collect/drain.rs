//! Drains the probes' maps: flip the generation, wait for probes in flight, read and clear the
//! retired one. Each sample and each microsecond blocked is read exactly once.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use autodump_common::{
    runtimes::{stat_slot, STAT_FRAMES, STAT_THREAD_MISSES},
    unwind::{UnwoundStack, UNWOUND_STACK_ID},
    Control, OffCpuStart, OffCpuTotal, StackKey, Stat, WakeKey, FLAG_RUNNABLE, MAX_STACK_DEPTH, OVERFLOW_STACK_ID,
    PRESEEDED_STACK_ID, WAKER_INTERRUPT,
};
use aya::maps::{MapData, MapError, StackTraceMap};

use super::batch::{take_each, take_map as take_all};
pub use super::probe_stats::ProbeStats;
use super::stack_tables::{Frames, StackRef, StackTables};
use crate::probes::ProbeMaps;

/// How long to wait after a flip for probes that read the old epoch to finish. A probe runs for
/// microseconds with preemption off; the margin covers a vCPU descheduled by the hypervisor.
pub const FLIP_GRACE: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
#[error("cannot read BPF map {map}: {source}")]
pub struct DrainError {
    map: &'static str,
    source: MapError,
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> DrainError {
    move |source| DrainError { map, source }
}

/// One side of a stack as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RawStack {
    /// Instruction pointers, innermost first (empty: no frames on that side, e.g. no kernel
    /// frames for a sample taken in user mode).
    Frames(Frames),
    /// The kernel could not record it: a hash collision in both stack maps, or a full map. Counted.
    Lost,
}

/// Counts for one (thread, user stack, kernel stack).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSample {
    pub tgid: u32,
    pub tid: u32,
    pub user: RawStack,
    pub kernel: RawStack,
    /// Off-CPU only: the thread was runnable (preempted), not blocked.
    pub runnable: bool,
    /// Page faults only: the faulting page's address.
    pub fault_address: u64,
    /// On-CPU: samples. Off-CPU: blocks.
    pub count: u64,
    /// Off-CPU only: time blocked.
    pub off_cpu_ns: u64,
    /// Threads still blocked when a window closes: the futex word they wait on (0: none).
    pub futex: u64,
}

/// Blocked time until a wake-up, by blocked stack and waker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawWakeup {
    /// The blocked thread as counted off-CPU; `off_cpu_ns` is its time until the wake-up.
    pub blocked: RawSample,
    /// The futex word it waited on; 0: not a futex wait.
    pub futex: u64,
    pub waker_tgid: u32,
    pub waker_tid: u32,
    pub waker_comm: String,
    /// Empty for a waker outside the watched processes (its kernel stack says the rest).
    pub waker_user: RawStack,
    pub waker_kernel: RawStack,
    /// The waker was an interrupt (a timer's expiry, a device), not the thread it interrupted.
    pub interrupt: bool,
}

/// Everything recorded in one generation.
#[derive(Debug, Default)]
pub struct Drained {
    pub cpu: Vec<RawSample>,
    pub offcpu: Vec<RawSample>,
    pub faults: Vec<RawSample>,
    pub wakeups: Vec<RawWakeup>,
}

impl Drained {
    /// Adds `other`'s samples to these (a later drain of the same process).
    pub fn extend(&mut self, other: Drained) {
        self.cpu.extend(other.cpu);
        self.offcpu.extend(other.offcpu);
        self.faults.extend(other.faults);
        self.wakeups.extend(other.wakeups);
    }

    /// Each process's part, by tgid.
    pub fn split(self) -> std::collections::HashMap<u32, Drained> {
        let mut parts: std::collections::HashMap<u32, Drained> = std::collections::HashMap::new();
        for s in self.cpu {
            parts.entry(s.tgid).or_default().cpu.push(s);
        }
        for s in self.offcpu {
            parts.entry(s.tgid).or_default().offcpu.push(s);
        }
        for s in self.faults {
            parts.entry(s.tgid).or_default().faults.push(s);
        }
        for w in self.wakeups {
            parts.entry(w.blocked.tgid).or_default().wakeups.push(w);
        }
        parts
    }
}

/// `bpf_map_update_elem`'s flag: only if the key is absent.
const BPF_NOEXIST: u64 = 1;

pub struct Drainer {
    maps: ProbeMaps,
    epoch: u32,
    tables: StackTables,
    /// Stacks the agent took of threads blocked before attach, by id (`PRESEEDED_STACK_ID`),
    /// and each process's ids, freed when it is forgotten.
    preseeded: HashMap<u32, Frames>,
    preseeded_by_process: HashMap<u32, Vec<u32>>,
    next_preseeded: u32,
}

/// A thread found blocked when its process was first watched, with its stacks.
pub struct Preblocked {
    pub tgid: u32,
    pub tid: u32,
    /// Innermost first.
    pub user: Vec<u64>,
    pub kernel: Vec<u64>,
    pub futex: u64,
}

impl Drainer {
    pub fn new(maps: ProbeMaps) -> Self {
        Self {
            maps,
            epoch: 0,
            tables: StackTables::default(),
            preseeded: HashMap::new(),
            preseeded_by_process: HashMap::new(),
            next_preseeded: 0,
        }
    }

    /// Counts `thread`'s blocked time from `start_ns` (CLOCK_MONOTONIC) under its stacks, as
    /// if the probes had seen it block then: its slot is seeded, unless the thread has
    /// switched since the probes started watching (it has a slot of its own). True if seeded.
    pub fn preseed(&mut self, thread: Preblocked, start_ns: u64) -> Result<bool, DrainError> {
        let mut id = || {
            self.next_preseeded = (self.next_preseeded + 1) % PRESEEDED_STACK_ID;
            PRESEEDED_STACK_ID | self.next_preseeded
        };
        let (user_id, kernel_id) = (id(), id());
        let start = OffCpuStart {
            start_ns,
            user_stack_id: user_id as i32,
            kernel_stack_id: kernel_id as i32,
            stack_epoch: self.epoch,
            flags: 0,
            tgid: thread.tgid,
            zero: 0,
            futex: thread.futex,
        };
        match self.maps.offcpu_start.insert(thread.tid, start, BPF_NOEXIST) {
            Ok(()) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => return Ok(false),
            Err(source) => return Err(DrainError { map: "OFFCPU_START", source }),
        }
        self.preseeded.insert(user_id, thread.user.into());
        self.preseeded.insert(kernel_id, thread.kernel.into());
        self.preseeded_by_process.entry(thread.tgid).or_default().extend([user_id, kernel_id]);
        Ok(true)
    }

    /// Switches the probes to the next generation, then reads and clears the one they wrote.
    pub fn drain(&mut self) -> Result<Drained, DrainError> {
        let retired = self.epoch;
        self.epoch = retired.wrapping_add(1);
        self.maps.control.set(0, Control { epoch: self.epoch }, 0).map_err(map_err("CONTROL"))?;
        std::thread::sleep(FLIP_GRACE);
        let gen = (retired % 2) as usize;

        let mut table = take_stacks(&mut self.maps.stacks[gen], 0).map_err(map_err("STACKS"))?;
        table.extend(
            take_stacks(&mut self.maps.overflow_stacks[gen], OVERFLOW_STACK_ID).map_err(map_err("OVERFLOW_STACKS"))?,
        );
        take_each(&mut self.maps.unwound[gen], |id, stack| table.push((*id, unwound_frames(stack))))
            .map_err(map_err("UNWOUND_STACKS"))?;
        self.tables.retire(retired, table);

        let mut drained = Drained::default();
        for (key, samples) in take_all(&mut self.maps.cpu_counts[gen]).map_err(map_err("CPU_COUNTS"))? {
            drained.cpu.push(self.sample(&key, samples, 0));
        }
        for (key, samples) in take_all(&mut self.maps.fault_counts[gen]).map_err(map_err("FAULT_COUNTS"))? {
            let sample = RawSample { fault_address: key.page << 12, ..self.sample(&key.stack, samples, 0) };
            drained.faults.push(sample);
        }
        for (key, total) in take_all(&mut self.maps.offcpu_totals[gen]).map_err(map_err("OFFCPU_TOTALS"))? {
            drained.offcpu.push(self.sample(&key, total.count, total.total_ns));
        }
        for (key, total) in take_all(&mut self.maps.wakeup_totals[gen]).map_err(map_err("WAKEUP_TOTALS"))? {
            drained.wakeups.push(self.wakeup(&key, &total));
        }
        // Its kernel stack ids named stacks of the map just cleared.
        take_each(&mut self.maps.kernel_stack_cache[gen], |_, _| ()).map_err(map_err("KERNEL_STACK_CACHE"))?;

        let mut blocked_refs = HashSet::new();
        for (_, start) in self.starts()? {
            if !start.is_blocked() {
                continue;
            }
            for id in [start.user_stack_id, start.kernel_stack_id] {
                if let Ok(id) = u32::try_from(id) {
                    blocked_refs.insert((start.stack_epoch, id) as StackRef);
                }
            }
        }
        self.tables.prune(retired, blocked_refs);
        Ok(drained)
    }

    /// Threads of process `tgid` blocked now, with their time from switch-out (or `floor_ns`,
    /// if later) to `now_ns`, both CLOCK_MONOTONIC. Used when a window closes.
    pub fn still_blocked(&self, tgid: u32, now_ns: u64, floor_ns: u64) -> Result<Vec<RawSample>, DrainError> {
        let mut samples = Vec::new();
        for (tid, start) in self.starts()? {
            if !start.is_blocked() || start.tgid != tgid {
                continue;
            }
            let blocked_ns = now_ns.saturating_sub(start.start_ns.max(floor_ns));
            samples.push(RawSample { futex: start.futex, ..self.sample(&start.key(tid), 1, blocked_ns) });
        }
        Ok(samples)
    }

    /// The watched processes.
    pub fn targets(&mut self) -> &mut crate::probes::targets::TargetMaps {
        &mut self.maps.targets
    }

    /// Stops recording process `tgid` and frees what its threads held: a thread's slot is freed
    /// at its last switch, except the last thread's, which switches out after its exit has
    /// taken the process out of the set.
    pub fn forget(&mut self, tgid: u32) -> Result<(), DrainError> {
        self.maps.targets.remove(tgid).map_err(map_err("TARGETS"))?;
        for id in self.preseeded_by_process.remove(&tgid).unwrap_or_default() {
            self.preseeded.remove(&id);
        }
        let mut stale = Vec::new();
        for (tid, start) in self.starts()? {
            if start.tgid == tgid {
                stale.push(tid);
            }
        }
        for tid in stale {
            let _ = self.maps.offcpu_start.remove(&tid);
        }
        Ok(())
    }

    /// One of the probes' counters, summed over CPUs.
    pub fn stat(&self, stat: Stat) -> Result<u64, DrainError> {
        let per_cpu = self.maps.stats.get(&(stat as u32), 0).map_err(map_err("STATS"))?;
        Ok(per_cpu.iter().sum())
    }

    /// Sums the probes' per-CPU stat slots; `runtimes` names the runtimes whose probe modules
    /// count, by frame kind.
    pub fn stats(&self, runtimes: &[(u8, &str)]) -> Result<ProbeStats, DrainError> {
        let mut totals = [0u64; Stat::COUNT as usize];
        for stat in Stat::ALL {
            totals[stat as usize] = self.stat(stat)?;
        }
        Ok(ProbeStats::of(&totals, self.runtime_stats(runtimes)?))
    }

    /// Each runtime's counters, by name.
    fn runtime_stats(&self, runtimes: &[(u8, &str)]) -> Result<std::collections::BTreeMap<String, u64>, DrainError> {
        let mut stats = std::collections::BTreeMap::new();
        for &(kind, name) in runtimes {
            for (which, what) in [(STAT_FRAMES, "frames"), (STAT_THREAD_MISSES, "thread_misses")] {
                let per_cpu = self.maps.stats.get(&stat_slot(kind, which), 0).map_err(map_err("STATS"))?;
                stats.insert(format!("{name}_{what}"), per_cpu.iter().sum());
            }
        }
        Ok(stats)
    }

    fn sample(&self, key: &StackKey, count: u64, off_cpu_ns: u64) -> RawSample {
        RawSample {
            tgid: key.tgid,
            tid: key.tid,
            user: self.resolve(key.stack_epoch, key.user_stack_id),
            kernel: self.resolve(key.stack_epoch, key.kernel_stack_id),
            runnable: key.flags & FLAG_RUNNABLE != 0,
            fault_address: 0,
            count,
            off_cpu_ns,
            futex: 0,
        }
    }

    fn wakeup(&self, key: &WakeKey, total: &OffCpuTotal) -> RawWakeup {
        let comm = key.waker_comm.split(|&b| b == 0).next().unwrap_or_default();
        RawWakeup {
            blocked: self.sample(&key.blocked, total.count, total.total_ns),
            futex: key.futex,
            waker_tgid: key.waker_tgid,
            waker_tid: key.waker_tid,
            waker_comm: String::from_utf8_lossy(comm).into_owned(),
            waker_user: self.resolve(key.waker_epoch, key.waker_user_stack_id),
            waker_kernel: self.resolve(key.waker_epoch, key.waker_kernel_stack_id),
            interrupt: key.waker_flags & WAKER_INTERRUPT != 0,
        }
    }

    fn resolve(&self, epoch: u32, id: i32) -> RawStack {
        match u32::try_from(id) {
            // -EFAULT: nothing to walk (a user-mode sample has no kernel frames).
            Err(_) if id == -libc::EFAULT => RawStack::Frames(Arc::from([])),
            Err(_) => RawStack::Lost,
            Ok(id) if id & (UNWOUND_STACK_ID | OVERFLOW_STACK_ID) == 0 && id & PRESEEDED_STACK_ID != 0 => {
                self.preseeded.get(&id).map_or(RawStack::Lost, |frames| RawStack::Frames(frames.clone()))
            }
            Ok(id) => match self.tables.get(epoch, id) {
                Some(frames) => RawStack::Frames(frames.clone()),
                None if epoch == self.epoch && id & (UNWOUND_STACK_ID | OVERFLOW_STACK_ID) == UNWOUND_STACK_ID => {
                    let gen = (epoch % 2) as usize;
                    let stack = self.maps.unwound[gen].get(&id, 0);
                    stack.map(|s| RawStack::Frames(unwound_frames(&s))).unwrap_or(RawStack::Lost)
                }
                None if epoch == self.epoch => {
                    let gen = (epoch % 2) as usize;
                    let (map, slot) = match id & OVERFLOW_STACK_ID {
                        0 => (&self.maps.stacks[gen], id),
                        _ => (&self.maps.overflow_stacks[gen], id & !OVERFLOW_STACK_ID),
                    };
                    map.get(&slot, 0).map(|t| RawStack::Frames(frames_of(&t))).unwrap_or(RawStack::Lost)
                }
                None => RawStack::Lost,
            },
        }
    }
}

/// Reads and deletes every stack of a stack map no probe writes to any more, naming each by its
/// id with `id_bits` set.
fn take_stacks(stacks: &mut StackTraceMap<MapData>, id_bits: u32) -> Result<Vec<(u32, Frames)>, MapError> {
    let ids: Vec<u32> = stacks.stack_ids().collect::<Result<_, _>>()?;
    let mut table = Vec::with_capacity(ids.len());
    for id in ids {
        // A stack may vanish between listing and reading only if something else deletes it.
        if let Ok(trace) = stacks.get(&id, 0) {
            table.push((id | id_bits, frames_of(&trace)));
        }
        stacks.remove(&id)?;
    }
    Ok(table)
}

fn unwound_frames(stack: &UnwoundStack) -> Frames {
    stack.ips[..(stack.len as usize).min(MAX_STACK_DEPTH)].into()
}

fn frames_of(trace: &aya::maps::stack_trace::StackTrace) -> Frames {
    trace.frames().iter().map(|f| f.ip).collect()
}

impl Drainer {
    /// Every thread's slot in the off-CPU start map, in a few batched reads (iterating costs two
    /// syscalls an entry: with 500 processes, a thousand each interval).
    fn starts(&self) -> Result<Vec<(u32, OffCpuStart)>, DrainError> {
        use std::os::fd::AsFd;
        let data = aya::maps::IterableMap::<u32, OffCpuStart>::map(&self.maps.offcpu_start);
        super::batch::read_all(data.fd().as_fd()).map_err(|io_error| {
            map_err("OFFCPU_START")(aya::sys::SyscallError { call: "bpf_map_lookup_batch", io_error }.into())
        })
    }
}
