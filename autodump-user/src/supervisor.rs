//! One configured target: its selector, rules and output directory, and a watcher for each
//! process it matches. The agent (`watch`) runs several of them over one set of probes.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    rc::Rc,
};

use crate::{
    cli::Cli,
    collect::{
        drain::Drained,
        process::{read_stat, PF_KTHREAD},
    },
    config::TargetConfig,
    error::AgentError,
    host::ProbeHost,
    model::reports::TargetInfo,
    record::flight::Slice,
    select::Selector,
    session::Session,
    ship::{Delivery, Shipping},
    watcher::{now, Watcher},
};

/// Ends and starts of a target's instances over the last hour.
#[derive(Default)]
struct Restarts {
    exits: VecDeque<f64>,
    restarts: VecDeque<f64>,
}

impl Restarts {
    const HOUR_S: f64 = 3600.0;

    /// A new instance appeared: a restart if an earlier one has ended.
    fn started(&mut self, t: f64) {
        if !self.exits.is_empty() {
            self.restarts.push_back(t);
        }
    }

    /// Drops what is older than an hour, but keeps the last exit: it tells a restart.
    fn prune(&mut self) {
        let since = now() - Self::HOUR_S;
        while self.exits.len() > 1 && self.exits.front().is_some_and(|&t| t < since) {
            self.exits.pop_front();
        }
        while self.restarts.front().is_some_and(|&t| t < since) {
            self.restarts.pop_front();
        }
    }
}

pub struct Supervisor {
    pub config: TargetConfig,
    /// Where this target's bundles go besides the disk.
    delivery: Delivery,
    /// The agent's settings, with this target's output directory.
    cli: Cli,
    pub watchers: BTreeMap<u32, Watcher>,
    /// Watched processes found ended this interval (`find_ended`), before the drain that holds
    /// their last moments; their exit bundles are written after it (`tick`).
    ended: Vec<u32>,
    /// Processes that read as ended while the probes had not yet seen their group's end: each is
    /// given one more interval (see `find_ended`).
    awaiting_exit: HashSet<u32>,
    restarts: Restarts,
    /// Whether "nothing matches yet" has been said (it is said once).
    said_waiting: bool,
    /// What scans learned of each process (see `Selector::scan_with`).
    scan_memo: crate::select::ScanMemo,
    /// Matched processes that are kernel threads or zombies, while they match: neither becomes
    /// a process to watch, and on a whole host, reading each one's stat every interval was a
    /// tenth of the agent's time. (Pids are handed out in turn, so one is not reused between
    /// two scans.)
    unwatchable: HashSet<u32>,
    /// Whose interval work is done this interval (see `cadence`): None, everyone's; else the
    /// processes whose turn it is, fixed when `find_ended` starts the interval.
    cadence: crate::cadence::Cadence,
    turns: Option<HashSet<u32>>,
}

impl Supervisor {
    /// Checks what can be checked at once: a unit needs systemd, a pid must exist, and the
    /// output directory must be usable.
    pub fn new(cli: &Cli, config: TargetConfig, ship: Rc<Shipping>) -> Result<Self, AgentError> {
        let cli = Cli { out: config.out.clone(), ..cli.clone() };
        let cadence = crate::cadence::Cadence::new(cli.processes_per_interval);
        config.selector.check()?;
        match config.selector {
            Selector::Pid(pid) => drop(Session::check(&cli, pid)?),
            _ => crate::write::bundle::prepare_out_dir(&cli.out)
                .map_err(|e| AgentError::new(crate::error::ExitCode::Output, e.to_string()))?,
        }
        for rule in config.rules.values() {
            tracing::info!(target = %config.name, rule = %rule, "watching");
        }
        let delivery = Delivery { target: config.name.clone(), upload: config.upload.clone(), ship };
        Ok(Self {
            delivery,
            config,
            cli,
            watchers: BTreeMap::new(),
            ended: Vec::new(),
            awaiting_exit: HashSet::new(),
            restarts: Restarts::default(),
            said_waiting: false,
            scan_memo: Default::default(),
            unwatchable: HashSet::new(),
            cadence,
            turns: None,
        })
    }

    /// With `--pid`, once its process has ended there is nothing left to do.
    pub fn finished(&self) -> bool {
        !self.config.selector.follows_restarts() && self.watchers.is_empty()
    }

    /// Finds the watched processes that have ended, before the scan for new ones (so that an
    /// instance started in the same interval counts as a restart) and before the drain.
    /// A leader that has exited while its other threads are still exiting (a crash takes the
    /// whole group down) already reads as a zombie before the exit probe sees the group end: such
    /// a process is given one more interval for its exit status to arrive.
    /// A process whose turn it is not (see `cadence`) is looked at in its turn: its exit bundle
    /// comes then.
    pub fn find_ended(&mut self, mut host: Option<&mut ProbeHost>) {
        let mut ended = Vec::new();
        let watched = self.watchers.len();
        self.turns = (self.cadence.stride(watched) > 1).then(|| {
            let keys = self.watchers.keys().enumerate();
            keys.filter(|(index, _)| self.cadence.is_turn(*index, watched)).map(|(_, pid)| *pid).collect()
        });
        for (&pid, w) in self.watchers.iter_mut() {
            if !self.turns.as_ref().is_none_or(|t| t.contains(&pid)) {
                continue;
            }
            if w.session.check_alive() {
                continue;
            }
            let known = host.as_mut().is_none_or(|h| h.exit_status(pid).is_some());
            if known || !self.awaiting_exit.insert(pid) {
                self.awaiting_exit.remove(&pid);
                ended.push(pid);
            }
        }
        self.ended = ended;
        let t = now();
        self.restarts.exits.extend(self.ended.iter().map(|_| t));
    }

    /// Starts watching the processes that match and that no target watches yet (the host
    /// loads with the first), and stops watching those that no longer match.
    /// `processes`: how many processes the host, if this loads it, walks with CFI at once.
    pub fn discover(
        &mut self,
        host: &mut Option<ProbeHost>,
        global: &Cli,
        taken: &HashSet<u32>,
        processes: u32,
    ) -> Result<(), AgentError> {
        if !self.config.selector.follows_restarts() && !self.watchers.is_empty() {
            return Ok(());
        }
        let matched = self.config.selector.scan_with(&mut self.scan_memo);
        // A zombie still has a name and a cgroup: it is an instance that ended, not a new one. A
        // kernel thread (the root cgroup holds them) has no user space to profile.
        let live =
            |pid: &u32| read_stat(*pid).is_ok_and(|s| s.state != 'Z' && s.state != 'X' && s.flags & PF_KTHREAD == 0);
        self.unwatchable.retain(|p| matched.binary_search(p).is_ok());
        let candidates = matched.iter().filter(|p| !taken.contains(p) && !self.unwatchable.contains(p));
        let (new, unwatchable): (Vec<u32>, Vec<u32>) = candidates.partition(|p| live(p));
        self.unwatchable.extend(unwatchable);
        // Alive, but no longer matching (moved to another cgroup, or exec'd another program). A
        // process that ended no longer matches either (its executable's link is gone), whether
        // it awaits its exit status or ended since `find_ended` looked: it is not leaving, it
        // gets its exit bundle next interval.
        let left: Vec<u32> = self
            .watchers
            .keys()
            .copied()
            .filter(|p| matched.binary_search(p).is_err() && !self.ended.contains(p) && !self.awaiting_exit.contains(p))
            .filter(|p| live(p))
            .collect();
        for pid in left {
            self.watchers.remove(&pid);
            tracing::info!(pid, target = %self.config.name, "left the target; no longer watched");
            if let Some(host) = host.as_mut() {
                host.forget(pid);
            }
        }
        if new.is_empty() {
            if self.watchers.is_empty() && !self.said_waiting {
                tracing::info!(target = %self.config.name, selector = %self.config.selector.describe(), "no process matches yet; waiting for one");
                self.said_waiting = true;
            }
            return Ok(());
        }
        self.said_waiting = false;
        let host = match host {
            Some(host) => host,
            None => host.insert(ProbeHost::start(global, &new, processes)?),
        };
        for pid in new {
            match Session::target(pid).and_then(|target| Session::open(host, &self.cli, target)) {
                Ok(session) => {
                    let watcher = Watcher::new(session, &self.cli, self.config.rules.clone(), self.delivery.clone());
                    tracing::info!(pid, target = %self.config.name, start_time = watcher.instance.start_time, "watching a new process");
                    self.restarts.started(now());
                    self.watchers.insert(pid, watcher);
                }
                // `--pid`: its process must exist; others may have ended since the scan.
                Err(e) if matches!(self.config.selector, Selector::Pid(_)) => return Err(e),
                Err(e) => tracing::debug!(pid, "process ended before it could be watched: {e}"),
            }
        }
        Ok(())
    }

    /// Before a drain: each live watcher learns its process's new threads and mappings.
    pub fn observe(&mut self, host: &mut ProbeHost) {
        for (pid, w) in self.watchers.iter_mut() {
            if !self.ended.contains(pid) && self.turns.as_ref().is_none_or(|t| t.contains(pid)) {
                w.session.observe(host);
            }
        }
    }

    /// Walks stopped in newly compiled code: each live watcher's runtimes read their code again.
    pub fn read_code(&mut self, host: &mut ProbeHost) {
        for (pid, w) in self.watchers.iter_mut() {
            if !self.ended.contains(pid) {
                w.session.read_code(host);
            }
        }
    }

    /// After a drain: exit bundles for the processes that ended, then every other watcher's tick.
    pub fn tick(&mut self, host: &mut ProbeHost, parts: &mut std::collections::HashMap<u32, Drained>) {
        self.restarts.prune();
        let turns = self.turns.take();
        let turn = |pid: &u32| turns.as_ref().is_none_or(|t| t.contains(pid));
        for pid in std::mem::take(&mut self.ended) {
            let Some(mut w) = self.watchers.remove(&pid) else { continue };
            let status = host.exit_status(pid);
            let last = w.session.tick(&self.cadence.take(pid, parts.remove(&pid).unwrap_or_default()));
            let info = self.info(&w);
            w.ended(host, &self.cli, last, status, &info);
            host.forget(pid);
        }
        for pid in self.watchers.keys().filter(|pid| !turn(pid)) {
            self.cadence.hold(*pid, parts.remove(pid).unwrap_or_default());
        }
        self.each(host, parts, |w, host, cli, slice, info| w.tick(host, cli, slice, info), |pid| turn(&pid));
        self.cadence.retain(|pid| self.watchers.contains_key(&pid));
        self.cadence.advance();
    }

    /// Hands each watcher its slice of a drain, with what summaries say of the target.
    /// Those for which `now` holds, with what the drains held for them since their last turn.
    pub fn each(
        &mut self,
        host: &ProbeHost,
        parts: &mut std::collections::HashMap<u32, Drained>,
        mut f: impl FnMut(&mut Watcher, &ProbeHost, &Cli, Slice, &TargetInfo),
        now: impl Fn(u32) -> bool,
    ) {
        let pids: Vec<u32> = self.watchers.keys().copied().filter(|&pid| now(pid)).collect();
        for pid in pids {
            let info = self.info(&self.watchers[&pid]);
            let w = self.watchers.get_mut(&pid).expect("listed");
            let part = self.cadence.take(pid, parts.remove(&pid).unwrap_or_default());
            let slice = w.session.tick(&part);
            f(w, host, &self.cli, slice, &info);
        }
    }

    /// Stops watching every process (the target was removed by a reload).
    pub fn release(&mut self, host: Option<&mut ProbeHost>) {
        if let Some(host) = host {
            for pid in self.watchers.keys() {
                host.forget(*pid);
            }
        }
        self.watchers.clear();
    }

    fn info(&self, watcher: &Watcher) -> TargetInfo {
        let since = now() - Restarts::HOUR_S;
        let recent = |q: &VecDeque<f64>| q.iter().filter(|&&t| t >= since).count();
        TargetInfo {
            name: self.config.name.clone(),
            selector: self.config.selector.describe(),
            instance: watcher.instance.clone(),
            restarts_last_hour: recent(&self.restarts.restarts),
            exits_last_hour: recent(&self.restarts.exits),
        }
    }
}
