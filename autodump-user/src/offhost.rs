//! Watch mode's ties off the host: what leaves it (bundles to the store, alerts out, through
//! `ship::Shipping`), what comes in (alerts that trigger bundles), and what `/metrics` shows,
//! gathered from the watchers each interval.

use std::rc::Rc;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::{
    cli::Cli,
    config::TargetConfig,
    error::{AgentError, ExitCode},
    host::ProbeHost,
    ship::{
        alertmanager::Alertmanager,
        alerts::{AlertPoller, FiredAlert, Triggers},
        metrics::{Snapshot, TargetSnapshot},
        ShipSettings, Shipping,
    },
    supervisor::Supervisor,
};

pub struct OffHost {
    pub ship: Rc<Shipping>,
    poller: Option<AlertPoller>,
    pub fired: UnboundedReceiver<FiredAlert>,
}

impl OffHost {
    /// Starts what the flags and targets ask for: uploads (if a target has a store), alerts out
    /// (`--alertmanager`), alerts in (a target with `alert_trigger`), `/metrics`.
    pub fn start(cli: &Cli, targets: &[TargetConfig]) -> Result<Self, AgentError> {
        let usage = |why: String| AgentError::new(ExitCode::Usage, why);
        let settings = ShipSettings {
            alertmanager: cli.alertmanager.clone(),
            severity: cli.alert_severity.clone(),
            resolve_after: cli.alert_resolve_after,
            bundle_url: cli.bundle_url.clone(),
            upload_rate: cli.upload_rate,
        };
        let uploads = targets.iter().any(|t| t.upload.is_some()) || cli.upload.is_some();
        let ship = Shipping::start(settings, uploads, &cli.out).map_err(|e| {
            AgentError::new(ExitCode::Output, format!("cannot start the upload queue in {}: {e}", cli.out.display()))
        })?;
        let triggers = triggers(targets);
        let (tx, fired) = unbounded_channel();
        let poller = match (&cli.alertmanager, triggers.is_empty()) {
            (Some(url), false) => {
                let stats = ship.metrics.alert_stats();
                Some(
                    AlertPoller::start(Alertmanager::new(url), cli.alert_poll, triggers, tx, stats)
                        .map_err(|e| usage(e.to_string()))?,
                )
            }
            (None, false) => return Err(usage("--alert-trigger needs --alertmanager".into())),
            _ => None,
        };
        if let Some(addr) = &cli.metrics_addr {
            let bound = crate::ship::metrics::serve(addr, ship.metrics.clone()).map_err(usage)?;
            tracing::info!(%bound, "serving /metrics");
        }
        Ok(Self { ship: Rc::new(ship), poller, fired })
    }

    /// SIGHUP: the store's credentials, and the targets' alert triggers, again.
    pub fn reload(&self, targets: &[TargetConfig]) {
        self.ship.reload();
        if let Some(poller) = &self.poller {
            poller.set(triggers(targets));
        }
    }

    /// What `/metrics` shows, from each target's processes' latest samples and the probes.
    pub fn refresh(&self, host: Option<&ProbeHost>, supervisors: &[Supervisor]) {
        let mut snapshot = Snapshot {
            agent_cpu_seconds: crate::collect::process::read_stat(std::process::id())
                .map_or(0.0, |s| s.cpu_ticks as f64 / ticks_per_second()),
            agent_rss_bytes: (crate::collect::memory::own_status_mib("VmRSS:") * (1 << 20) as f64) as u64,
            agent_heap_bytes: crate::collect::memory::heap_in_use() as u64,
            ..Default::default()
        };
        for s in supervisors {
            let mut t = TargetSnapshot { name: s.config.name.clone(), ..Default::default() };
            for w in s.watchers.values() {
                t.processes += 1;
                let Some(m) = w.latest_sample() else { continue };
                t.cpu_cores += m.cpu_percent.unwrap_or(0.0) / 100.0;
                t.cpu_capacity_ratio = t.cpu_capacity_ratio.max(m.cpu_capacity_percent.unwrap_or(0.0) / 100.0);
                t.rss_bytes += m.rss_bytes.unwrap_or(0);
                t.threads += m.threads.unwrap_or(0);
                t.fds += m.fds.unwrap_or(0);
                t.lock_wait += m.lock_wait.unwrap_or(0.0);
                for (metric, value) in &m.runtime.0 {
                    *t.runtime.entry(metric.name).or_insert(0) += value;
                }
            }
            snapshot.targets.push(t);
        }
        if let Some(host) = host {
            if let Ok(d) = host.stats() {
                snapshot.lost = [
                    ("cpu_user_stack", d.cpu_user_stack_errors),
                    ("cpu_kernel_stack", d.cpu_kernel_stack_errors),
                    ("offcpu_user_stack", d.offcpu_user_stack_errors),
                    ("offcpu_kernel_stack", d.offcpu_kernel_stack_errors),
                    ("fault_user_stack", d.fault_user_stack_errors),
                    ("fault_kernel_stack", d.fault_kernel_stack_errors),
                    ("full_maps", d.cpu_counts_full + d.offcpu_start_full + d.offcpu_totals_full + d.fault_counts_full),
                ]
                .into_iter()
                .collect();
            }
            snapshot.probe_runs = host.probe_runs();
        }
        *self.ship.metrics.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }
}

fn triggers(targets: &[TargetConfig]) -> Triggers {
    targets
        .iter()
        .filter(|t| !t.alert_triggers.is_empty())
        .map(|t| (t.name.clone(), t.alert_triggers.clone()))
        .collect()
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}
