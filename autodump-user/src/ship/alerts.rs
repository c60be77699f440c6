//! Alerts both ways, each on a thread of its own so that watching never waits on Alertmanager:
//! - out: every bundle posts an alert (retried with backoff until it would have ended);
//! - in: the firing alerts are polled every `--alert-poll`, and each newly firing one that a
//!   target's `--alert-trigger` matches is handed to the agent, which writes that target's
//!   bundles. An alert that stays firing is handed over once.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use super::{
    alertmanager::{Alertmanager, PostedAlert},
    matchers::Matchers,
};
use crate::model::reports::AlertReason;

/// Failed posts are retried after this, doubling up to `MAX_RETRY`.
const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(120);

/// What the alert threads have done, for `/metrics`.
#[derive(Default)]
pub struct AlertStats {
    pub posted: AtomicU64,
    pub post_failures: AtomicU64,
    /// Alerts given up because they would have ended before Alertmanager took them.
    pub expired: AtomicU64,
    pub polls: AtomicU64,
    pub poll_failures: AtomicU64,
}

/// Posts alerts in the background.
pub struct AlertSender {
    tx: mpsc::Sender<PostedAlert>,
    /// Alerts sent and not yet posted or given up.
    in_flight: Arc<AtomicU64>,
}

impl AlertSender {
    pub fn start(am: Alertmanager, stats: Arc<AlertStats>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<PostedAlert>();
        let in_flight = Arc::new(AtomicU64::new(0));
        let flying = in_flight.clone();
        std::thread::Builder::new().name("autodump-alert".into()).spawn(move || {
            let mut pending: Vec<PostedAlert> = Vec::new();
            let (mut failures, mut said): (u32, Option<String>) = (0, None);
            loop {
                let wait = match (pending.is_empty(), failures) {
                    (true, _) => None,
                    (false, 0) => Some(Duration::ZERO),
                    (false, n) => Some(FIRST_RETRY.saturating_mul(1 << (n - 1).min(8)).min(MAX_RETRY)),
                };
                let got = match wait {
                    None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                    Some(wait) => rx.recv_timeout(wait),
                };
                match got {
                    Ok(alert) => pending.push(alert),
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
                pending.extend(rx.try_iter());
                let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
                let before = pending.len();
                pending.retain(|a| a.ends_at > now);
                stats.expired.fetch_add((before - pending.len()) as u64, Ordering::Relaxed);
                flying.fetch_sub((before - pending.len()) as u64, Ordering::Relaxed);
                if pending.is_empty() {
                    continue;
                }
                match am.post(&pending) {
                    Ok(()) => {
                        stats.posted.fetch_add(pending.len() as u64, Ordering::Relaxed);
                        flying.fetch_sub(pending.len() as u64, Ordering::Relaxed);
                        pending.clear();
                        failures = 0;
                        if said.take().is_some() {
                            tracing::info!(url = am.url(), "alerts reach Alertmanager again");
                        }
                    }
                    Err(e) => {
                        stats.post_failures.fetch_add(1, Ordering::Relaxed);
                        failures += 1;
                        let now = e.to_string();
                        if said.as_deref() != Some(now.as_str()) {
                            tracing::warn!("cannot post alerts: {now}; retried with backoff");
                            said = Some(now);
                        }
                    }
                }
            }
        })?;
        Ok(Self { tx, in_flight })
    }

    pub fn send(&self, alert: PostedAlert) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(alert);
    }

    /// Alerts sent and not yet posted (or given up).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A newly firing alert for one target.
#[derive(Clone, Debug)]
pub struct FiredAlert {
    pub target: String,
    pub alert: AlertReason,
    /// When it began firing, Unix seconds (now if Alertmanager's time does not parse).
    pub since: f64,
}

/// Each target's matchers (`--alert-trigger`, `alert_trigger` in the config file).
pub type Triggers = Vec<(String, Vec<Matchers>)>;

/// Polls the firing alerts in the background.
pub struct AlertPoller {
    triggers: mpsc::Sender<Triggers>,
}

impl AlertPoller {
    pub fn start(
        am: Alertmanager,
        every: Duration,
        triggers: Triggers,
        fired: tokio::sync::mpsc::UnboundedSender<FiredAlert>,
        stats: Arc<AlertStats>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Triggers>();
        std::thread::Builder::new().name("autodump-alert-poll".into()).spawn(move || {
            let mut triggers = triggers;
            // (target, fingerprint) of the alerts handed over and still firing.
            let mut seen: HashSet<(String, String)> = HashSet::new();
            let mut said: Option<String> = None;
            let mut next = Instant::now();
            loop {
                match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                    Ok(new) => {
                        triggers = new;
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
                next = Instant::now() + every;
                stats.polls.fetch_add(1, Ordering::Relaxed);
                let alerts = match am.firing() {
                    Ok(alerts) => {
                        if said.take().is_some() {
                            tracing::info!(url = am.url(), "Alertmanager answers again");
                        }
                        alerts
                    }
                    Err(e) => {
                        stats.poll_failures.fetch_add(1, Ordering::Relaxed);
                        let now = e.to_string();
                        if said.as_deref() != Some(now.as_str()) {
                            tracing::warn!(
                                "cannot list alerts: {now}; polled again in {}",
                                humantime::format_duration(every)
                            );
                            said = Some(now);
                        }
                        continue;
                    }
                };
                let firing: HashSet<&str> = alerts.iter().map(|a| a.fingerprint.as_str()).collect();
                seen.retain(|(_, fp)| firing.contains(fp.as_str()));
                for alert in &alerts {
                    for (target, matchers) in &triggers {
                        if !matchers.iter().any(|m| m.matches(&alert.labels)) {
                            continue;
                        }
                        if !seen.insert((target.clone(), alert.fingerprint.clone())) {
                            continue;
                        }
                        let since = humantime::parse_rfc3339_weak(&alert.starts_at)
                            .ok()
                            .map_or_else(|| crate::collect::unix_now(SystemTime::now()), crate::collect::unix_now);
                        let reason = AlertReason {
                            name: alert.labels.get("alertname").cloned().unwrap_or_default(),
                            labels: alert.labels.clone(),
                            starts_at: alert.starts_at.clone(),
                            fingerprint: alert.fingerprint.clone(),
                        };
                        tracing::info!(target = %target, alert = %reason.name, "alert matched: writing bundles");
                        let _ = fired.send(FiredAlert { target: target.clone(), alert: reason, since });
                    }
                }
            }
        })?;
        Ok(Self { triggers: tx })
    }

    /// New triggers after a reload.
    pub fn set(&self, triggers: Triggers) {
        let _ = self.triggers.send(triggers);
    }
}

/// The labels of an alert posted for a bundle.
pub fn labels(host: &str, target: &str, reason: &str, severity: &str) -> BTreeMap<String, String> {
    [("alertname", "AutodumpIncident"), ("host", host), ("target", target), ("reason", reason), ("severity", severity)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
