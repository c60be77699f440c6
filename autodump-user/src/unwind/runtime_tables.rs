//! The probes' view of CPython processes (`PY_PROCS`, `PY_THREADS`): where each one's eval
//! loop is and how its frames are laid out, and every Python thread's state by tid, so that a
//! walk through the eval loop emits the thread's Python frames (see the eBPF side's
//! `unwind::python`). Only with CFI unwinding, whose walk does it.

use std::collections::HashMap;

use autodump_common::{maps, unwind::PyProc};
use aya::maps::{HashMap as BpfHashMap, MapData};

use crate::probes::Probes;

pub struct PythonTables {
    procs: BpfHashMap<MapData, u32, PyProc>,
    threads: BpfHashMap<MapData, u64, u64>,
    /// The threads listed per process, and their states.
    listed: HashMap<u32, HashMap<u32, u64>>,
}

impl PythonTables {
    /// The maps, when the probes walk user stacks with CFI.
    pub fn take(probes: &mut Probes) -> Option<Self> {
        let procs = BpfHashMap::try_from(probes.take_cfi_map(maps::PY_PROCS)?).ok()?;
        let threads = BpfHashMap::try_from(probes.take_cfi_map(maps::PY_THREADS)?).ok()?;
        Some(Self { procs, threads, listed: HashMap::new() })
    }

    /// Process `pid` runs the interpreter `info` describes.
    pub fn watch(&mut self, pid: u32, info: PyProc) -> std::io::Result<()> {
        self.procs.insert(pid, info, 0).map_err(std::io::Error::other)
    }

    /// `pid`'s Python threads now, (tid, thread state): the new and changed are written, the
    /// gone removed. Returns how many could not be written (the map is full).
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
