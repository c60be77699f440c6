//! What threads waited on and who released them, read from the wake-up profile: waits grouped
//! by the futex they blocked on (a contended mutex, a condition variable), each lock named by
//! the program's code that takes it, with the code that released it (for a mutex, the code
//! that held it) and the stacks of both sides.

use std::collections::HashMap;

use serde::Serialize;

use super::frames::runtime_frame;
use crate::{
    record::profile::{pseudo, Profile, SampleKey},
    symbolize::Location,
};

/// How many locks a bundle lists, heaviest first, and how many of each side's stacks.
pub const TOP_LOCKS: usize = 10;
pub const TOP_STACKS: usize = 3;

/// Shared libraries whose frames are the locking machinery, not the program that locks.
const SYSTEM_LIBRARIES: [&str; 5] = ["libc.so", "libpthread", "ld-linux", "libstdc++", "libgcc_s"];

/// A lock a runtime knows by name (CPython's GIL): every futex in `[start, end)` is it.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedLock {
    pub start: u64,
    pub end: u64,
    pub name: &'static str,
}

/// A name and the wait under it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Share {
    pub name: String,
    pub wait_us: u64,
}

/// One lock: the waits on one futex word of the process.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LockReport {
    /// The futex word's address in the process (a named lock's first byte).
    pub address: String,
    /// What its runtime calls it ("the GIL").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'static str>,
    /// Its waits over the window's wall time: the share of the window a thread waited on it,
    /// summed over threads (above 1: more than one at a time).
    pub waiting_share: f64,
    /// The program's innermost function under the heaviest waits: where the lock is taken.
    pub taken_in: String,
    /// Time threads blocked on it until woken, and how many blocks.
    pub wait_us: u64,
    pub waits: u64,
    /// The threads that waited, heaviest first.
    pub waiters: Vec<Share>,
    /// What released the waiters: the program's innermost function in the waker's stack (for a
    /// mutex, the code that held it), or the waker's name when none of its code is in it. Waits
    /// that ended at their own timeout are apart (`timed_out_us`) when others were released:
    /// a timed wait (CPython's GIL asks its holder to drop it every switch interval) goes on
    /// waiting for the same holder.
    pub released_by: Vec<Share>,
    pub timed_out_us: u64,
    /// The heaviest stacks on each side, root first, `;`-separated.
    pub blocked_stacks: Vec<Share>,
    pub waker_stacks: Vec<Share>,
}

/// The locks of `wakeups` over a window of `window_s`, heaviest first; a futex inside one of
/// `named` is that lock.
pub fn locks(wakeups: &Profile, named: &[NamedLock], window_s: f64) -> Vec<LockReport> {
    let mut by_lock: HashMap<(u64, Option<&'static str>), Lock> = HashMap::new();
    let program = program_waits(wakeups);
    for (key, value) in &wakeups.samples {
        let Some(wake) = split(wakeups, key).filter(&program) else { continue };
        let Some(address) = wake.lock.and_then(futex_address) else { continue };
        // A condition variable's waiters block on one of two adjacent words (glibc's
        // `__g_signals`), in one 8-byte word: one lock.
        let lock = match named.iter().find(|n| (n.start..n.end).contains(&address)) {
            Some(n) => (n.start, Some(n.name)),
            None => (address & !7, None),
        };
        let us = (value.nanos + 500) / 1000;
        let entry = by_lock.entry(lock).or_default();
        entry.wait_us += us;
        entry.waits += value.count;
        let site = program_function(wakeups, wake.blocked);
        *entry.taken_in.entry(site.clone()).or_default() += us;
        *entry.waiters.entry(key.thread.to_string()).or_default() += us;
        let waker = program_function(wakeups, &wake.waker).or_else(|| wake.waker_name.map(String::from));
        *entry.released_by.entry(waker.clone()).or_default() += us;
        *entry.by_site.entry((site, waker)).or_default() += us;
        *entry.blocked_stacks.entry(root_first(wakeups, wake.blocked.iter().rev())).or_default() += us;
        *entry.waker_stacks.entry(root_first(wakeups, wake.waker.iter().rev())).or_default() += us;
    }
    // A futex only its own timeouts ended is a timed sleep (Java's Thread.sleep parks on one),
    // not a lock: nothing held it.
    by_lock.retain(|_, lock| lock.released_by.keys().any(|k| k.as_deref() != Some(pseudo::TIMER)));
    let mut locks: Vec<LockReport> = by_lock
        .into_iter()
        .map(|((address, name), mut lock)| {
            let timed_out_us = timed_out(&mut lock.released_by);
            if name.is_some() {
                lock.released_by = held_through_timeouts(&lock.by_site);
            }
            (address, name, timed_out_us, lock)
        })
        .map(|(address, name, timed_out_us, lock)| LockReport {
            address: format!("{address:x}"),
            name,
            waiting_share: lock.wait_us as f64 / (window_s.max(1e-9) * 1e6),
            taken_in: heaviest(lock.taken_in).into_iter().next().map_or_else(|| "?".into(), |s| s.name),
            wait_us: lock.wait_us,
            waits: lock.waits,
            waiters: heaviest(lock.waiters.into_iter().map(|(k, v)| (Some(k), v)).collect()),
            timed_out_us,
            released_by: heaviest(lock.released_by),
            blocked_stacks: top(heaviest(lock.blocked_stacks.into_iter().map(|(k, v)| (Some(k), v)).collect())),
            waker_stacks: top(heaviest(lock.waker_stacks.into_iter().map(|(k, v)| (Some(k), v)).collect())),
        })
        .collect();
    locks.sort_by(|a, b| b.wait_us.cmp(&a.wait_us).then_with(|| a.address.cmp(&b.address)));
    locks.truncate(TOP_LOCKS);
    locks
}

/// Time blocked on futexes until another thread woke them, over every wake-up of `profiles`:
/// the `lock_wait` metric's numerator. A wait its own timeout ended waited for no one.
pub fn lock_wait_ns(profiles: &crate::record::Profiles) -> u64 {
    let Some(wakeups) = profiles.get(crate::record::profile::ProfileKind::WAKEUPS) else { return 0 };
    let program = program_waits(wakeups);
    let released = |w: &Wake<'_>| w.lock.is_some() && w.waker_name != Some(pseudo::TIMER) && program(w);
    wakeups.samples.iter().filter(|(k, _)| split(wakeups, k).is_some_and(|w| released(&w))).map(|(_, v)| v.nanos).sum()
}

/// Which waits are the program's: where a runtime named frames, only those of threads that run
/// the program's code (a JVM's compiler threads wait on its compile queue, not for the
/// program), as the verdict reads off-CPU time; else all.
fn program_waits(wakeups: &Profile) -> impl Fn(&Wake<'_>) -> bool + '_ {
    let runs_program = |w: &Wake<'_>| w.blocked.iter().any(|&i| runtime_frame(&wakeups.locations[i as usize]));
    let any = wakeups.samples.keys().any(|k| split(wakeups, k).is_some_and(|w| runs_program(&w)));
    move |w: &Wake<'_>| !any || runs_program(w)
}

/// The address in a futex label (`[futex 0x7f…]`).
fn futex_address(label: &str) -> Option<u64> {
    let hex = label.strip_prefix(pseudo::FUTEX_PREFIX)?.strip_suffix(']')?;
    u64::from_str_radix(hex, 16).ok()
}

#[derive(Default)]
struct Lock {
    wait_us: u64,
    waits: u64,
    taken_in: HashMap<Option<String>, u64>,
    waiters: HashMap<String, u64>,
    released_by: HashMap<Option<String>, u64>,
    blocked_stacks: HashMap<String, u64>,
    waker_stacks: HashMap<String, u64>,
    /// Waits by (where taken, what released them).
    by_site: HashMap<(Option<String>, Option<String>), u64>,
}

/// A wake-up sample's parts (see `record::wakeups`), each stack innermost first.
struct Wake<'a> {
    /// The futex label, if the thread waited on one.
    lock: Option<&'a str>,
    blocked: &'a [u32],
    /// The waker's kernel and user frames.
    waker: Vec<u32>,
    waker_name: Option<&'a str>,
}

fn split<'a>(profile: &'a Profile, key: &'a SampleKey) -> Option<Wake<'a>> {
    let name = |i: u32| profile.locations[i as usize].frames.first().map(|f| &*f.function);
    let separator = key.stack.iter().position(|&i| name(i) == Some(pseudo::WOKEN_BY))?;
    let (waker_part, rest) = key.stack.split_at(separator);
    let rest = &rest[1..];
    let lock = rest.first().and_then(|&i| name(i)).filter(|n| n.starts_with(pseudo::FUTEX_PREFIX));
    let blocked = if lock.is_some() { &rest[1..] } else { rest };
    // The waker's part is stored root first under its name: [name, user..., kernel...].
    let (waker_name, waker) = match waker_part.split_first() {
        Some((&label, frames)) => (name(label), frames.iter().rev().copied().collect()),
        None => (None, Vec::new()),
    };
    Some(Wake { lock, blocked, waker, waker_name })
}

/// The program's innermost function in `stack` (innermost first): the innermost frame a
/// runtime named if there is one, else the innermost user frame outside the system's
/// libraries, as `function (file:line)`.
fn program_function(profile: &Profile, stack: &[u32]) -> Option<String> {
    let leaf_first: Vec<&Location> = stack.iter().map(|&i| &*profile.locations[i as usize]).collect();
    program_function_of(&leaf_first)
}

/// [`program_function`] of a stack of locations, innermost first.
pub fn program_function_of(leaf_first: &[&Location]) -> Option<String> {
    let user = |l: &Location| !l.kernel && l.address != 0;
    let program = |l: &Location| user(l) && !l.mapping.as_ref().is_some_and(|m| system_library(m.module()));
    let chosen = leaf_first
        .iter()
        .find(|l| runtime_frame(l))
        .or_else(|| leaf_first.iter().find(|l| program(l)))
        .or_else(|| leaf_first.iter().find(|l| user(l)))?;
    let frame = chosen.frames.first()?;
    Some(match (&frame.file, frame.line) {
        (Some(file), Some(line)) => {
            format!("{} ({}:{line})", frame.function, file.rsplit('/').next().unwrap_or(file))
        }
        _ => frame.function.to_string(),
    })
}

fn system_library(module: &str) -> bool {
    SYSTEM_LIBRARIES.iter().any(|l| module.starts_with(l))
}

fn root_first<'a>(profile: &Profile, stack: impl Iterator<Item = &'a u32>) -> String {
    let mut names = Vec::new();
    for &i in stack {
        let location = &profile.locations[i as usize];
        for frame in location.frames.iter().rev() {
            names.push(if location.kernel { format!("{}_[k]", frame.function) } else { frame.function.to_string() });
        }
    }
    names.join(";")
}

/// What released a named lock's waiters, a runtime's lock whose waiters time out only to ask
/// its holder to let go and wait on (CPython's GIL, every switch interval): the waits taken at
/// one site that timed out are the holders' who released that site's other waits, in
/// proportion. A site nothing else released keeps its timeouts as the timer's.
fn held_through_timeouts(by_site: &HashMap<(Option<String>, Option<String>), u64>) -> HashMap<Option<String>, u64> {
    let timer = Some(pseudo::TIMER.to_string());
    let mut released: HashMap<Option<String>, u64> = HashMap::new();
    let sites: std::collections::HashSet<&Option<String>> = by_site.keys().map(|(site, _)| site).collect();
    for site in sites {
        let of_site = || by_site.iter().filter(move |((s, _), _)| s == site);
        let timed: u64 = of_site().filter(|((_, r), _)| *r == timer).map(|(_, us)| us).sum();
        let others: u64 = of_site().filter(|((_, r), _)| *r != timer).map(|(_, us)| us).sum();
        for ((_, releaser), &us) in of_site() {
            match (releaser == &timer, others) {
                (true, 0) => *released.entry(releaser.clone()).or_default() += us,
                (true, _) => {}
                (false, _) => {
                    let share = (timed as f64 * us as f64 / others as f64).round() as u64;
                    *released.entry(releaser.clone()).or_default() += us + share;
                }
            }
        }
    }
    released
}

/// Takes the timer's wakes out of `released_by` if anything else released waiters; their time.
fn timed_out(released_by: &mut HashMap<Option<String>, u64>) -> u64 {
    let timer = Some(pseudo::TIMER.to_string());
    if released_by.keys().any(|k| k.is_some() && *k != timer) {
        released_by.remove(&timer).unwrap_or(0)
    } else {
        0
    }
}

fn heaviest(map: HashMap<Option<String>, u64>) -> Vec<Share> {
    let mut shares: Vec<Share> = map.into_iter().filter_map(|(k, v)| Some(Share { name: k?, wait_us: v })).collect();
    shares.sort_by(|a, b| b.wait_us.cmp(&a.wait_us).then_with(|| a.name.cmp(&b.name)));
    shares
}

fn top(mut shares: Vec<Share>) -> Vec<Share> {
    shares.truncate(TOP_STACKS);
    shares
}

#[cfg(test)]
#[path = "locks_tests.rs"]
mod tests;
