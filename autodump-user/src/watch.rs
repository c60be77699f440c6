//! Watch mode (no `--duration`): every configured target (the command line's, and those of the
//! `--config` file) is watched by a supervisor, and every process they match is recorded by one
//! shared set of probes into its own flight recorder, with its own metrics, rules and bundles.
//! Each interval the agent looks for new matches, so a service is followed across its restarts.
//! SIGHUP reloads the config file, keeping the targets that did not change. Runs until
//! SIGINT/SIGTERM, or, when every target is a `--pid`, until those processes end; exits 0.

use std::{collections::HashSet, time::Duration};

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    budget::MemoryBudget, cli::Cli, config::TargetConfig, error::AgentError, host::ProbeHost, offhost::OffHost,
    select::Selector, ship::alerts::FiredAlert, supervisor::Supervisor,
};

struct Agent {
    cli: Cli,
    /// Loaded when the first process matches.
    host: Option<ProbeHost>,
    supervisors: Vec<Supervisor>,
    budget: MemoryBudget,
    off: OffHost,
}

pub async fn watch(cli: Cli, targets: Vec<TargetConfig>) -> anyhow::Result<()> {
    // The probes load when the first process matches, which may be long after start: a missing
    // privilege is said now.
    crate::probes::privilege::check()?;
    let off = OffHost::start(&cli, &targets)?;
    let supervisors =
        targets.into_iter().map(|t| Supervisor::new(&cli, t, off.ship.clone())).collect::<Result<Vec<_>, _>>()?;
    let interval = cli.interval;
    let budget = MemoryBudget::new(cli.memory_budget);
    let mut agent = Agent { cli, host: None, supervisors, budget, off };
    agent.discover()?;

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigusr1 = signal(SignalKind::user_defined1())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut late = LateTicks::new(interval);
    let mut code_check = tokio::time::interval(agent.cli.code_check);
    code_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => agent.reload(),
            _ = sigusr1.recv() => {
                tracing::info!("SIGUSR1: writing a manual bundle of each watched process");
                let Some(mut parts) = agent.drain()? else { continue };
                let host = agent.host.as_ref().expect("drained");
                for s in agent.supervisors.iter_mut() {
                    s.each(host, &mut parts, |w, host, cli, slice, info| w.manual(host, cli, slice, info), |_| true);
                }
            }
            Some(fired) = agent.off.fired.recv() => agent.alert(&fired)?,
            _ = code_check.tick() => agent.read_new_code(),
            _ = tick.tick() => {
                late.observe();
                agent.tick()?;
                if agent.supervisors.iter().all(Supervisor::finished) {
                    return Ok(());
                }
            }
        }
    }
    // SIGINT/SIGTERM: bundles that were due are written now, with what there is.
    if let Some(host) = agent.host.as_mut() {
        let mut parts = host.stop()?;
        for s in agent.supervisors.iter_mut() {
            s.each(host, &mut parts, |w, host, cli, slice, info| w.shutdown(host, cli, slice, info), |_| true);
        }
    }
    tracing::info!(ticks = late.ticks, missed_intervals = late.missed, "stopping; probes detached");
    Ok(())
}

impl Agent {
    /// New matches of every target; a process two targets match is watched by the first.
    fn discover(&mut self) -> Result<(), AgentError> {
        // Only --pid targets: exactly their processes; else up to --unwind-processes.
        let pids = self.supervisors.iter().filter(|s| matches!(s.config.selector, Selector::Pid(_))).count();
        let processes = match pids == self.supervisors.len() {
            true => pids.max(1) as u32,
            false => self.cli.unwind_processes,
        };
        for i in 0..self.supervisors.len() {
            let taken: HashSet<u32> = self.supervisors.iter().flat_map(|s| s.watchers.keys().copied()).collect();
            self.supervisors[i].discover(&mut self.host, &self.cli, &taken, processes)?;
        }
        Ok(())
    }

    /// Walks stopped in code compiled since its JIT's code was last read: it is read now.
    fn read_new_code(&mut self) {
        let Some(host) = self.host.as_mut() else { return };
        if host.new_code() {
            self.supervisors.iter_mut().for_each(|s| s.read_code(host));
        }
    }

    /// Each watcher learns its process's threads and mappings, then the probes are drained.
    fn drain(&mut self) -> Result<Option<std::collections::HashMap<u32, crate::collect::drain::Drained>>, AgentError> {
        let Some(host) = self.host.as_mut() else { return Ok(None) };
        for s in self.supervisors.iter_mut() {
            s.observe(host);
        }
        host.drain().map(Some)
    }

    /// One interval: processes that ended (seen before the drain that holds their last
    /// moments), new ones, the drain, then every supervisor's watchers.
    fn tick(&mut self) -> Result<(), AgentError> {
        for s in self.supervisors.iter_mut() {
            s.find_ended(self.host.as_mut());
        }
        self.discover()?;
        let Some(mut parts) = self.drain()? else { return Ok(()) };
        let host = self.host.as_mut().expect("drained");
        for s in self.supervisors.iter_mut() {
            s.tick(host, &mut parts);
        }
        self.budget.enforce(host, &mut self.supervisors);
        self.off.refresh(Some(host), &self.supervisors);
        Ok(())
    }

    /// An Alertmanager alert matched a target: each of its processes writes a bundle now (the
    /// other targets' processes record this stretch as usual).
    fn alert(&mut self, fired: &FiredAlert) -> Result<(), AgentError> {
        let Some(mut parts) = self.drain()? else { return Ok(()) };
        let host = self.host.as_ref().expect("drained");
        for s in self.supervisors.iter_mut() {
            if s.config.name == fired.target {
                s.each(host, &mut parts, |w, host, cli, slice, info| w.alert(host, cli, slice, info, fired), |_| true);
            } else {
                s.each(host, &mut parts, |w, _, _, slice, _| w.record(slice), |_| true);
            }
        }
        Ok(())
    }

    /// SIGHUP: reads the config file again. Targets whose definition did not change keep their
    /// watchers and flight recorders; the others start afresh. A bad file changes nothing.
    fn reload(&mut self) {
        let targets = match crate::config::targets(&self.cli) {
            Ok(targets) => targets,
            Err(e) => {
                tracing::warn!("SIGHUP: the configuration was not reloaded, the running one stays: {e}");
                return;
            }
        };
        self.off.reload(&targets);
        let mut old: Vec<Supervisor> = std::mem::take(&mut self.supervisors);
        let (mut kept, mut started) = (0, 0);
        for target in targets {
            if let Some(i) = old.iter().position(|s| s.config == target) {
                self.supervisors.push(old.remove(i));
                kept += 1;
                continue;
            }
            match Supervisor::new(&self.cli, target, self.off.ship.clone()) {
                Ok(s) => {
                    self.supervisors.push(s);
                    started += 1;
                }
                Err(e) => tracing::warn!("SIGHUP: a target was left out: {e}"),
            }
        }
        for mut s in old {
            tracing::info!(target = %s.config.name, "SIGHUP: target removed or changed; its processes are no longer watched by it");
            s.release(self.host.as_mut());
        }
        tracing::info!(kept, started, "SIGHUP: configuration reloaded");
    }
}

/// Counts intervals the agent missed: a tick later than twice the interval after the previous
/// one (a bundle write or a starved agent) stands for the ticks that did not happen. No data is
/// lost then, but that slice covers more than one interval.
struct LateTicks {
    interval: Duration,
    last: std::time::Instant,
    ticks: u64,
    missed: u64,
}

impl LateTicks {
    fn new(interval: Duration) -> Self {
        Self { interval, last: std::time::Instant::now(), ticks: 0, missed: 0 }
    }

    fn observe(&mut self) {
        let gap = self.last.elapsed();
        self.last = std::time::Instant::now();
        self.ticks += 1;
        if gap > 2 * self.interval {
            let missed = (gap.as_secs_f64() / self.interval.as_secs_f64()) as u64 - 1;
            self.missed += missed;
            tracing::warn!(gap_ms = gap.as_millis() as u64, missed, "the agent fell behind; intervals missed");
        }
    }
}
