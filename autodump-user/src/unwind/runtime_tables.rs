//! The probes' view of processes that run a language runtime (`RUNTIME_PROCS`,
//! `RUNTIME_THREADS`): which runtime, where its interpreter's code is and how what it reads is
//! laid out, and a word per thread the runtime's step starts from (CPython's thread state), so
//! that a walk through the interpreter emits the runtime's frames (see the eBPF side's
//! `runtimes`). Only with CFI unwinding, whose walk does it.

use std::collections::HashMap;

use autodump_common::{maps, runtimes::RuntimeProc};
use aya::maps::{HashMap as BpfHashMap, MapData};

use crate::probes::Probes;

pub struct RuntimeTables {
    procs: BpfHashMap<MapData, u32, RuntimeProc>,
    threads: BpfHashMap<MapData, u64, u64>,
    /// The threads listed per process, and their words.
    listed: HashMap<u32, HashMap<u32, u64>>,
}

impl RuntimeTables {
    /// The maps, when the probes walk user stacks with CFI.
    pub fn take(probes: &mut Probes) -> Option<Self> {
        let procs = BpfHashMap::try_from(probes.take_cfi_map(maps::RUNTIME_PROCS)?).ok()?;
        let threads = BpfHashMap::try_from(probes.take_cfi_map(maps::RUNTIME_THREADS)?).ok()?;
        Some(Self { procs, threads, listed: HashMap::new() })
    }

    /// Process `pid` runs the runtime `info` describes.
    pub fn watch(&mut self, pid: u32, info: RuntimeProc) -> std::io::Result<()> {
        self.procs.insert(pid, info, 0).map_err(std::io::Error::other)
    }

    /// `pid`'s threads now, (tid, word): the new and changed are written, the gone removed.
    /// Returns how many could not be written (the map is full).
    pub fn threads(&mut self, pid: u32, now: &[(u32, u64)]) -> usize {
        let listed = self.listed.entry(pid).or_default();
        let key = |tid: u32| u64::from(pid) << 32 | u64::from(tid);
        let current: HashMap<u32, u64> = now.iter().copied().collect();
        listed.retain(|tid, _| {
            let keep = current.contains_key(tid);
            if !keep {
                let _ = self.threads.remove(&key(*tid));
            }
            keep
        });
        let mut failed = 0;
        for (&tid, &tstate) in &current {
            if listed.get(&tid) != Some(&tstate) {
                if self.threads.insert(key(tid), tstate, 0).is_ok() {
                    listed.insert(tid, tstate);
                } else {
                    failed += 1;
                }
            }
        }
        failed
    }

    pub fn forget(&mut self, pid: u32) {
        let _ = self.procs.remove(&pid);
        for tid in self.listed.remove(&pid).unwrap_or_default().into_keys() {
            let _ = self.threads.remove(&(u64::from(pid) << 32 | u64::from(tid)));
        }
    }
}
