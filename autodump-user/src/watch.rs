//! Watch mode (no `--duration`): record continuously into the flight recorder, sample metrics,
//! and write a bundle when a rule fires (after `--after` more seconds), on SIGUSR1, or when the
//! target dies. Runs until SIGINT/SIGTERM or the target's end, then exits 0.

use std::{collections::BTreeMap, path::Path, time::SystemTime};

use tokio::signal::unix::{signal, SignalKind};

use crate::{
    cli::{Cli, OnExit},
    collect::{
        metrics::{Limits, Metric, MetricSampler},
        unix_now,
    },
    incident::{self, Context, Incident, Span},
    record::flight::FlightRecorder,
    session::Session,
    trigger::{rule::Rule, Settings, Trigger, Verdict},
    write::retention,
};

/// A rule fired; the bundle is written once `due` has passed.
struct Pending {
    fired: crate::trigger::Fired,
    due: f64,
}

struct Watch {
    cli: Cli,
    session: Session,
    flight: FlightRecorder,
    trigger: Trigger,
    limits: Limits,
    limits_read_at: f64,
}

/// How often the memory and open-files limits are read again (a cgroup limit can change).
const LIMITS_REFRESH_S: f64 = 10.0;

pub async fn watch(cli: Cli, rules: BTreeMap<Metric, Rule>) -> anyhow::Result<()> {
    let settings = Settings {
        warmup_s: cli.warmup.as_secs_f64(),
        baseline_s: cli.baseline.as_secs_f64(),
        cooldown_s: cli.cooldown.as_secs_f64(),
        max_per_hour: cli.max_bundles_per_hour,
    };
    for rule in rules.values() {
        tracing::info!(rule = %rule, "watching");
    }
    let session = Session::start(&cli)?;
    // Keep enough to cover the lookback before a trigger plus the time after it.
    let keep = (cli.lookback + cli.after + 2 * cli.interval).as_secs_f64();
    let mut w = Watch {
        limits: Limits::read(cli.pid),
        limits_read_at: now(),
        flight: FlightRecorder::new(keep),
        trigger: Trigger::new(rules, settings),
        session,
        cli,
    };
    let mut sampler = MetricSampler::new(w.cli.pid);
    let mut pending: Option<Pending> = None;

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigusr1 = signal(SignalKind::user_defined1())?;
    let mut tick = tokio::time::interval(w.cli.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut late = LateTicks::new(w.cli.interval);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sigusr1.recv() => {
                tracing::info!("SIGUSR1: writing a manual bundle");
                w.flight.push_slice(w.session.tick()?);
                let now = now();
                w.write(Incident::Manual, Span { from: now - w.cli.lookback.as_secs_f64(), trigger: now, to: now }, true);
            }
            _ = tick.tick() => {
                late.observe();
                if !w.session.target.is_alive() {
                    w.target_ended(pending.take())?;
                    return Ok(());
                }
                w.flight.push_slice(w.session.tick()?);
                let Ok(mut sample) = sampler.sample() else { continue }; // it just exited: next tick
                sample.goroutines = w.session.goroutine_count();
                sample.rss_split = w.session.memory.latest_split();
                if sample.t - w.limits_read_at >= LIMITS_REFRESH_S {
                    (w.limits, w.limits_read_at) = (Limits::read(w.cli.pid), sample.t);
                }
                w.flight.push_metrics(sample.clone());
                match w.trigger.observe(&sample, &w.limits) {
                    Verdict::Fired(fired) if pending.is_none() => {
                        tracing::warn!(metric = fired.metric.name(), value = fired.value, threshold = fired.threshold,
                            baseline_mean = ?fired.baseline_mean, rule = %fired.rule, "rule fired; recording {:?} more", w.cli.after);
                        pending = Some(Pending { due: fired.t + w.cli.after.as_secs_f64(), fired });
                    }
                    Verdict::Fired(fired) => tracing::info!(metric = fired.metric.name(), "rule fired while a bundle is pending; it covers this too"),
                    Verdict::Suppressed(fired, why) => tracing::debug!(metric = fired.metric.name(), why, "rule matched but held back"),
                    Verdict::Quiet => {}
                }
                if pending.as_ref().is_some_and(|p| now() >= p.due) {
                    let p = pending.take().expect("checked");
                    w.write_rule_bundle(p.fired, now());
                }
            }
        }
    }
    // SIGINT/SIGTERM: a bundle that was due to be written is written now, with what there is.
    if let Some(p) = pending.take() {
        w.flight.push_slice(w.session.tick()?);
        w.write_rule_bundle(p.fired, now());
    }
    tracing::info!(ticks = late.ticks, missed_intervals = late.missed, "stopping; probes detached");
    Ok(())
}

/// Counts intervals the agent missed: a tick later than twice the interval after the previous
/// one (a bundle write or a starved agent) stands for the ticks that did not happen. No data is
/// lost then, but that slice covers more than one interval.
struct LateTicks {
    interval: std::time::Duration,
    last: std::time::Instant,
    ticks: u64,
    missed: u64,
}

impl LateTicks {
    fn new(interval: std::time::Duration) -> Self {
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

impl Watch {
    fn write_rule_bundle(&mut self, fired: crate::trigger::Fired, to: f64) {
        let span = Span { from: fired.t - self.cli.lookback.as_secs_f64(), trigger: fired.t, to };
        self.write(Incident::Rule(fired), span, true);
    }

    /// The target is gone: finish the bundle that was due, then write the exit bundle if the
    /// policy asks for it.
    fn target_ended(&mut self, pending: Option<Pending>) -> anyhow::Result<()> {
        let lookback = self.cli.lookback.as_secs_f64();
        let last = self.session.stop(now() - lookback)?;
        // The last slice holds the final moments: the windows end where it ends.
        let died = last.end;
        self.flight.push_slice(last);
        let status = self.session.exit_status();
        tracing::warn!(pid = self.cli.pid, ?status, "target exited");
        if let Some(p) = pending {
            self.write_rule_bundle(p.fired, died);
        }
        let abnormal = status.is_none_or(|s| s.is_abnormal());
        if self.cli.on_exit == OnExit::Always || (self.cli.on_exit == OnExit::Abnormal && abnormal) {
            self.write(Incident::Exit(status), Span { from: died - lookback, trigger: died, to: died }, false);
        }
        Ok(())
    }

    /// Writes a bundle and applies retention. A failure (disk full, directory gone) is logged
    /// and the bundle dropped; watching goes on.
    fn write(&mut self, incident: Incident, span: Span, include_blocked_now: bool) {
        let started = std::time::Instant::now();
        let ctx = Context {
            session: &mut self.session,
            flight: &self.flight,
            trigger: &self.trigger,
            limits: &self.limits,
            include_blocked_now,
        };
        match incident::write(ctx, &incident, span, &self.cli.out) {
            Ok(path) => {
                tracing::info!(path = %path.display(), reason = incident.kind(), took_ms = started.elapsed().as_millis() as u64, "bundle written");
                println!("{}", path.display());
                for removed in retention::prune(&self.cli.out, self.cli.max_bundles, self.cli.max_disk, &path) {
                    tracing::info!(path = %removed.display(), "removed old bundle (retention)");
                }
            }
            Err(e) => {
                tracing::warn!(reason = incident.kind(), out = %Path::new(&self.cli.out).display(), "bundle dropped: {e:#}")
            }
        }
        // Rendering a bundle allocates tens of MiB, some on a second thread's malloc arena. Give
        // the freed memory back, or every bundle would leave the agent a little larger.
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
    }
}

fn now() -> f64 {
    unix_now(SystemTime::now())
}
