//! Deadlocks among the threads blocked when a window closes: each thread waiting on a mutex
//! whose holder is known, followed holder to holder until the chain comes back to itself.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

/// A thread blocked on a mutex another thread of its process holds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WaitingThread {
    pub tid: u32,
    pub thread: String,
    /// The mutex's address.
    pub lock: String,
    /// The program's innermost function under the wait.
    pub waits_in: String,
    /// The thread that holds the mutex.
    pub held_by: u32,
}

/// Threads each waiting for a mutex the next one holds, the last for the first's.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Deadlock {
    pub threads: Vec<WaitingThread>,
}

impl Deadlock {
    /// "left waits in f (a.c:1) for right, which waits in g (a.c:2) for left".
    pub fn describe(&self) -> String {
        let name =
            |tid: u32| self.threads.iter().find(|t| t.tid == tid).map_or(format!("tid {tid}"), |t| t.thread.clone());
        let links: Vec<String> = self
            .threads
            .iter()
            .enumerate()
            .map(|(i, t)| match i {
                0 => format!("{} waits in {} for {}", t.thread, t.waits_in, name(t.held_by)),
                _ => format!("waits in {} for {}", t.waits_in, name(t.held_by)),
            })
            .collect();
        links.join(", which ")
    }
}

/// The cycles of `waiting`'s wait-for graph, each once, starting at its lowest tid.
pub fn deadlocks(waiting: &[WaitingThread]) -> Vec<Deadlock> {
    let by_tid: BTreeMap<u32, &WaitingThread> = waiting.iter().map(|w| (w.tid, w)).collect();
    let mut found = BTreeSet::new();
    let mut cycles = Vec::new();
    for &start in by_tid.keys() {
        let mut path: Vec<u32> = Vec::new();
        let mut at = start;
        while let Some(thread) = by_tid.get(&at) {
            if let Some(i) = path.iter().position(|&t| t == at) {
                let mut cycle = path[i..].to_vec();
                let lowest = cycle.iter().enumerate().min_by_key(|(_, t)| **t).map_or(0, |(i, _)| i);
                cycle.rotate_left(lowest);
                if found.insert(cycle.clone()) {
                    cycles.push(Deadlock { threads: cycle.iter().map(|t| by_tid[t].clone()).collect() });
                }
                break;
            }
            path.push(at);
            at = thread.held_by;
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(tid: u32, thread: &str, held_by: u32) -> WaitingThread {
        let (lock, waits_in) = (format!("{tid:x}0"), format!("take_{thread} (a.c:{tid})"));
        WaitingThread { tid, thread: thread.into(), lock, waits_in, held_by }
    }

    #[test]
    fn a_cycle_is_a_deadlock_and_a_chain_is_not() {
        // 10 and 11 wait for each other; 12 waits for 10 (stuck behind the deadlock, not in it);
        // 13 waits for a thread that is not waiting.
        let all = [waits(11, "right", 10), waits(10, "left", 11), waits(12, "late", 10), waits(13, "other", 99)];
        let found = deadlocks(&all);
        assert_eq!(found.len(), 1);
        let tids: Vec<u32> = found[0].threads.iter().map(|t| t.tid).collect();
        assert_eq!(tids, [10, 11]);
        assert_eq!(
            found[0].describe(),
            "left waits in take_left (a.c:10) for right, which waits in take_right (a.c:11) for left"
        );
        assert!(deadlocks(&all[2..]).is_empty());
    }
}
