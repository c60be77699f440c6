//! One watched process in watch mode: its flight recorder, metrics, rules and pending bundle.
//! The layer above (`watch`) finds processes, shares the probes between them and follows
//! restarts; a watcher knows only its own process.

use std::{collections::BTreeMap, path::Path, time::SystemTime};

use crate::{
    cli::{Cli, OnExit},
    collect::{
        metrics::{Limits, Metric, MetricSampler},
        process::Instance,
        unix_now,
    },
    host::ProbeHost,
    incident::{self, Context, Incident, Span},
    model::reports::TargetInfo,
    probes::targets::ExitStatus,
    record::flight::{FlightRecorder, Slice},
    session::Session,
    ship::{alerts::FiredAlert, Delivery},
    trigger::{rule::Rule, Fired, Settings, Trigger, Verdict},
    write::retention,
};

/// How often the memory, open-files and CPU limits are read again (a cgroup limit can change):
/// three reads a process, which on a host of 500 were a twentieth of the agent's time at 10 s.
const LIMITS_REFRESH_S: f64 = 30.0;

/// A rule fired; the bundle is written once `due` has passed.
struct Pending {
    fired: Fired,
    due: f64,
}

pub struct Watcher {
    pub session: Session,
    /// Where its bundles go besides the disk.
    delivery: Delivery,
    pub instance: Instance,
    flight: FlightRecorder,
    trigger: Trigger,
    limits: Limits,
    limits_read_at: f64,
    sampler: MetricSampler,
    pending: Option<Pending>,
}

fn settings(cli: &Cli) -> Settings {
    Settings {
        warmup_s: cli.warmup.as_secs_f64(),
        baseline_s: cli.baseline.as_secs_f64(),
        cooldown_s: cli.cooldown.as_secs_f64(),
        max_per_hour: cli.max_bundles_per_hour,
        rearm_fraction: f64::from(cli.rearm_below) / 100.0,
    }
}

impl Watcher {
    pub fn new(session: Session, cli: &Cli, rules: BTreeMap<Metric, Rule>, delivery: Delivery) -> Self {
        let pid = session.target.pid;
        let trigger = Trigger::new(rules, settings(cli));
        // Keep enough to cover the lookback before a rule's condition began (up to its `for=`
        // before it fired) plus the time after it.
        let keep = (cli.lookback + cli.after + 2 * cli.interval).as_secs_f64() + trigger.longest_hold_s();
        Self {
            instance: Instance::of(&session.target),
            session,
            delivery,
            flight: FlightRecorder::new(keep),
            trigger,
            limits: Limits::read(pid),
            limits_read_at: now(),
            sampler: MetricSampler::new(pid),
            pending: None,
        }
    }

    /// Nothing recorded for the last `seconds`.
    pub fn idle_for(&self, seconds: f64) -> bool {
        self.flight.idle_for(seconds)
    }

    /// Cuts the flight recorder to its last `keep_s` (the memory budget); true if it held more.
    pub fn shed(&mut self, keep_s: f64) -> bool {
        self.flight.shed(keep_s)
    }

    pub fn pid(&self) -> u32 {
        self.session.target.pid
    }

    /// One interval: record the slice, sample the metrics, judge the rules, write a bundle due.
    pub fn tick(&mut self, host: &ProbeHost, cli: &Cli, slice: Slice, info: &TargetInfo) {
        let lock_wait =
            crate::model::locks::lock_wait_ns(&slice.profiles) as f64 / 1e9 / (slice.end - slice.start).max(1e-3);
        self.flight.push_slice(slice);
        let split = self.session.memory.latest_split();
        let Ok(mut sample) = self.sampler.sample(self.session.stat.as_ref(), split) else {
            return; // it just exited: next tick
        };
        sample.runtime.0 = self.session.runtime_metrics();
        sample.lock_wait = host.wakeups().then_some(lock_wait);
        if sample.t - self.limits_read_at >= LIMITS_REFRESH_S {
            (self.limits, self.limits_read_at) = (Limits::read(self.pid()), sample.t);
        }
        sample.set_capacity(&self.limits.cpu);
        self.flight.push_metrics(sample.clone());
        let pid = self.pid();
        match self.trigger.observe(&sample, &self.limits) {
            Verdict::Fired(fired) if self.pending.is_none() => {
                tracing::warn!(pid, metric = fired.metric.name(), value = fired.value, threshold = fired.threshold,
                    baseline_mean = ?fired.baseline_mean, rule = %fired.rule, "rule fired; recording {:?} more", cli.after);
                self.pending = Some(Pending { due: fired.t + cli.after.as_secs_f64(), fired });
            }
            Verdict::Fired(fired) => {
                tracing::info!(
                    pid,
                    metric = fired.metric.name(),
                    "rule fired while a bundle is pending; it covers this too"
                )
            }
            Verdict::Suppressed(fired, why) => {
                tracing::debug!(pid, metric = fired.metric.name(), why, "rule matched but held back")
            }
            Verdict::Quiet => {}
        }
        if self.pending.as_ref().is_some_and(|p| now() >= p.due) {
            let p = self.pending.take().expect("checked");
            self.write_rule_bundle(host, cli, p.fired, now(), info);
        }
    }

    /// SIGUSR1: a bundle of the last `--lookback`, now.
    pub fn manual(&mut self, host: &ProbeHost, cli: &Cli, slice: Slice, info: &TargetInfo) {
        self.flight.push_slice(slice);
        let now = now();
        let span = Span { from: now - cli.lookback.as_secs_f64(), trigger: now, to: now };
        self.write(host, cli, Incident::Manual, span, true, info);
    }

    /// An Alertmanager alert matched this target: a bundle now, reaching back before the alert
    /// began (as far as the flight recorder goes), unless the cooldown or the hourly cap holds it.
    pub fn alert(&mut self, host: &ProbeHost, cli: &Cli, slice: Slice, info: &TargetInfo, fired: &FiredAlert) {
        self.flight.push_slice(slice);
        let now = now();
        if let Err(why) = self.trigger.admit(&format!("alert:{}", fired.alert.name), now) {
            tracing::info!(pid = self.pid(), alert = %fired.alert.name, why, "alert matched but held back");
            return;
        }
        // From before the alert began, or as far back as the lookback goes if it began long ago.
        let trigger = fired.since.clamp(now - cli.lookback.as_secs_f64(), now);
        let span = Span { from: trigger - cli.lookback.as_secs_f64(), trigger, to: now };
        self.write(host, cli, Incident::Alert(fired.alert.clone()), span, true, info);
    }

    /// Keeps `slice` in the flight recorder (an interval drained early, for another target's bundle).
    pub fn record(&mut self, slice: Slice) {
        self.flight.push_slice(slice);
    }

    /// The latest metric sample (for /metrics).
    pub fn latest_sample(&self) -> Option<&crate::collect::metrics::MetricSample> {
        self.flight.latest_metrics()
    }

    /// The agent is stopping: a bundle that was due is written now, with what there is.
    pub fn shutdown(&mut self, host: &ProbeHost, cli: &Cli, slice: Slice, info: &TargetInfo) {
        self.flight.push_slice(slice);
        if let Some(p) = self.pending.take() {
            self.write_rule_bundle(host, cli, p.fired, now(), info);
        }
    }

    /// The process is gone; `last` holds its final moments. Finish the bundle that was due,
    /// then write the exit bundle if the policy asks for it.
    pub fn ended(&mut self, host: &ProbeHost, cli: &Cli, last: Slice, status: Option<ExitStatus>, info: &TargetInfo) {
        // The last slice holds the final moments: the windows end where it ends.
        let died = last.end;
        self.flight.push_slice(last);
        tracing::warn!(pid = self.pid(), ?status, "target exited");
        if let Some(p) = self.pending.take() {
            self.write_rule_bundle(host, cli, p.fired, died, info);
        }
        let abnormal = status.is_none_or(|s| s.is_abnormal());
        if cli.on_exit == OnExit::Always || (cli.on_exit == OnExit::Abnormal && abnormal) {
            let lookback = cli.lookback.as_secs_f64();
            let span = Span { from: died - lookback, trigger: died, to: died };
            self.write(host, cli, Incident::Exit(status), span, false, info);
        }
    }

    fn write_rule_bundle(&mut self, host: &ProbeHost, cli: &Cli, fired: Fired, to: f64, info: &TargetInfo) {
        // A sustained rule's window reaches back to when its condition began.
        let span = Span { from: fired.since - cli.lookback.as_secs_f64(), trigger: fired.since, to };
        self.write(host, cli, Incident::Rule(fired), span, true, info);
    }

    /// Writes a bundle and applies retention. A failure (disk full, directory gone) is logged
    /// and the bundle dropped; watching goes on.
    fn write(
        &mut self,
        host: &ProbeHost,
        cli: &Cli,
        incident: Incident,
        span: Span,
        blocked_now: bool,
        info: &TargetInfo,
    ) {
        let started = std::time::Instant::now();
        let ctx = Context {
            host,
            session: &mut self.session,
            flight: &self.flight,
            trigger: &self.trigger,
            limits: &self.limits,
            include_blocked_now: blocked_now,
            target: Some(info),
        };
        match incident::write(ctx, &incident, span, &cli.out) {
            Ok(written) => {
                let path = &written.path;
                tracing::info!(path = %path.display(), reason = incident.kind(), took_ms = started.elapsed().as_millis() as u64, "bundle written");
                println!("{}", path.display());
                self.delivery.bundle_written(&written);
                let ship = &self.delivery.ship;
                let pruned = retention::prune(&cli.out, cli.max_bundles, cli.max_disk, path, &|b| ship.pending(b));
                for removed in &pruned.removed {
                    tracing::info!(path = %removed.display(), "removed old bundle (retention)");
                }
                pruned.not_uploaded.iter().for_each(|b| ship.dropped(b));
            }
            Err(e) => {
                tracing::warn!(reason = incident.kind(), out = %Path::new(&cli.out).display(), "bundle dropped: {e:#}")
            }
        }
        // Rendering a bundle allocates tens of MiB, some on a second thread's malloc arena. Give
        // the freed memory back, or every bundle would leave the agent a little larger.
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
    }
}

pub fn now() -> f64 {
    unix_now(SystemTime::now())
}
