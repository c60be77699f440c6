//! `/metrics` (`--metrics-addr`): what the agent sees and does, in Prometheus's exposition
//! format, encoded by `prometheus-client` at each scrape from a snapshot the agent refreshes each
//! interval and from the upload and alert threads' counters. Targets are labelled by name, never
//! by pid (a pid label would be a new series at every restart).

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use super::{alerts::AlertStats, uploader::UploadStats};

/// One target's processes, summed (CPU capacity: the process closest to its limit).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetSnapshot {
    pub name: String,
    pub processes: u64,
    /// Cores' worth of CPU time per second.
    pub cpu_cores: f64,
    /// CPU used over what the process may use, 0 to 1: the highest of the target's processes.
    pub cpu_capacity_ratio: f64,
    pub rss_bytes: u64,
    pub threads: u64,
    pub fds: u64,
    /// Seconds of lock wait per second, summed over the processes.
    pub lock_wait: f64,
    /// The runtimes' metrics (`goroutines`, `python_threads`), by name, over the processes that
    /// have them.
    pub runtime: BTreeMap<&'static str, u64>,
}

/// What the agent refreshes each interval.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub targets: Vec<TargetSnapshot>,
    /// Events the probes lost, by kind, since load.
    pub lost: BTreeMap<&'static str, u64>,
    /// Per program: run time (ns) and runs, where `kernel.bpf_stats_enabled` is on.
    pub probe_runs: BTreeMap<String, (u64, u64)>,
    pub agent_cpu_seconds: f64,
    pub agent_rss_bytes: u64,
    pub agent_heap_bytes: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub snapshot: Mutex<Snapshot>,
    /// Bundles written, by (target, reason).
    bundles: Mutex<BTreeMap<(String, String), u64>>,
    upload: Mutex<Option<Arc<UploadStats>>>,
    alerts: Mutex<Option<Arc<AlertStats>>>,
}

impl std::fmt::Debug for UploadStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UploadStats")
    }
}

impl std::fmt::Debug for AlertStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlertStats")
    }
}

impl Metrics {
    pub fn bundle_written(&self, target: &str, reason: &str) {
        *lock(&self.bundles).entry((target.to_string(), reason.to_string())).or_default() += 1;
    }

    pub fn set_upload(&self, stats: Arc<UploadStats>) {
        *lock(&self.upload) = Some(stats);
    }

    /// The alert threads' counters, created with the first that asks.
    pub fn alert_stats(&self) -> Arc<AlertStats> {
        lock(&self.alerts).get_or_insert_with(Default::default).clone()
    }

    /// The exposition text, as served.
    pub fn encode(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Arc::clone(self)));
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes one metric family: its descriptor, then each labelled value.
fn family<L: prometheus_client::encoding::EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: &[(L, Value)],
) -> Result<(), std::fmt::Error> {
    let Some(first) = values.first() else { return Ok(()) };
    let mut metric = encoder.encode_descriptor(name, help, unit, first.1.metric_type())?;
    for (labels, value) in values {
        let family = metric.encode_family(labels)?;
        match value {
            Value::Gauge(v) => ConstGauge::new(*v).encode(family)?,
            Value::Counter(v) => ConstCounter::new(*v).encode(family)?,
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Value {
    Gauge(f64),
    Counter(f64),
}

impl Value {
    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        match self {
            Value::Gauge(_) => prometheus_client::metrics::MetricType::Gauge,
            Value::Counter(_) => prometheus_client::metrics::MetricType::Counter,
        }
    }
}

type NoLabels = [(&'static str, &'static str); 0];

impl Collector for Metrics {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let one = |v: Value| -> Vec<(NoLabels, Value)> { vec![([], v)] };
        family(
            &mut e,
            "autodump_build_info",
            "The agent's version",
            None,
            &[([("version", env!("CARGO_PKG_VERSION"))], Value::Gauge(1.0))],
        )?;
        let s = lock(&self.snapshot).clone();
        let per_target = |f: &dyn Fn(&TargetSnapshot) -> Option<f64>| -> Vec<([(&'static str, String); 1], Value)> {
            s.targets.iter().filter_map(|t| Some(([("target", t.name.clone())], Value::Gauge(f(t)?)))).collect()
        };
        family(
            &mut e,
            "autodump_target_processes",
            "Processes of the target watched",
            None,
            &per_target(&|t| Some(t.processes as f64)),
        )?;
        family(
            &mut e,
            "autodump_target_cpu_cores",
            "CPU the target's processes use, in cores",
            None,
            &per_target(&|t| Some(t.cpu_cores)),
        )?;
        family(
            &mut e,
            "autodump_target_cpu_capacity_ratio",
            "CPU used over what the process may use (cgroup quota, cpuset, online CPUs), highest of the target's processes",
            None,
            &per_target(&|t| Some(t.cpu_capacity_ratio)),
        )?;
        family(
            &mut e,
            "autodump_target_resident_memory",
            "Resident memory of the target's processes",
            Some(&Unit::Bytes),
            &per_target(&|t| Some(t.rss_bytes as f64)),
        )?;
        family(
            &mut e,
            "autodump_target_threads",
            "Threads of the target's processes",
            None,
            &per_target(&|t| Some(t.threads as f64)),
        )?;
        family(
            &mut e,
            "autodump_target_open_fds",
            "Open file descriptors of the target's processes",
            None,
            &per_target(&|t| Some(t.fds as f64)),
        )?;
        family(
            &mut e,
            "autodump_target_lock_wait",
            "Seconds the target's threads spent blocked on locks (futex waits until woken), per second",
            None,
            &per_target(&|t| Some(t.lock_wait)),
        )?;
        for metric in crate::runtimes::metrics() {
            let name = format!("autodump_target_{}", metric.name);
            let values = per_target(&|t| t.runtime.get(metric.name).map(|&v| v as f64));
            family(&mut e, &name, metric.help, None, &values)?;
        }
        let bundles: Vec<_> = lock(&self.bundles)
            .iter()
            .map(|((t, r), n)| ([("target", t.clone()), ("reason", r.clone())], Value::Counter(*n as f64)))
            .collect();
        family(&mut e, "autodump_bundles", "Bundles written, by target and reason", None, &bundles)?;
        let lost: Vec<_> = s.lost.iter().map(|(k, v)| ([("kind", *k)], Value::Counter(*v as f64))).collect();
        family(&mut e, "autodump_probe_lost_events", "Events the probes could not record, by kind", None, &lost)?;
        let runs: Vec<_> = s
            .probe_runs
            .iter()
            .map(|(p, (ns, _))| ([("program", p.clone())], Value::Counter(*ns as f64 / 1e9)))
            .collect();
        family(
            &mut e,
            "autodump_probe_run",
            "Time the probes ran (kernel.bpf_stats_enabled)",
            Some(&Unit::Seconds),
            &runs,
        )?;
        let counts: Vec<_> =
            s.probe_runs.iter().map(|(p, (_, n))| ([("program", p.clone())], Value::Counter(*n as f64))).collect();
        family(&mut e, "autodump_probe_runs", "Times the probes ran (kernel.bpf_stats_enabled)", None, &counts)?;
        family(
            &mut e,
            "autodump_agent_cpu",
            "The agent's own CPU time",
            Some(&Unit::Seconds),
            &one(Value::Counter(s.agent_cpu_seconds)),
        )?;
        family(
            &mut e,
            "autodump_agent_resident_memory",
            "The agent's own resident memory",
            Some(&Unit::Bytes),
            &one(Value::Gauge(s.agent_rss_bytes as f64)),
        )?;
        family(
            &mut e,
            "autodump_agent_heap",
            "The agent's own heap, which --memory-budget bounds",
            Some(&Unit::Bytes),
            &one(Value::Gauge(s.agent_heap_bytes as f64)),
        )?;
        if let Some(u) = lock(&self.upload).clone() {
            let c = |a: &std::sync::atomic::AtomicU64| Value::Counter(a.load(Ordering::Relaxed) as f64);
            let oldest = *lock(&u.oldest_queued_at);
            let age = if oldest > 0.0 {
                (crate::collect::unix_now(std::time::SystemTime::now()) - oldest).max(0.0)
            } else {
                0.0
            };
            family(
                &mut e,
                "autodump_upload_queue_bundles",
                "Bundles waiting to be uploaded",
                None,
                &one(Value::Gauge(u.queued.load(Ordering::Relaxed) as f64)),
            )?;
            family(
                &mut e,
                "autodump_upload_queue_oldest_age",
                "How long the oldest queued bundle has waited",
                Some(&Unit::Seconds),
                &one(Value::Gauge(age)),
            )?;
            family(&mut e, "autodump_uploaded_bundles", "Bundles uploaded whole", None, &one(c(&u.uploaded_bundles)))?;
            family(&mut e, "autodump_uploaded", "Bytes uploaded", Some(&Unit::Bytes), &one(c(&u.uploaded_bytes)))?;
            family(
                &mut e,
                "autodump_upload_failures",
                "Upload attempts that failed (retried)",
                None,
                &one(c(&u.failures)),
            )?;
            family(
                &mut e,
                "autodump_upload_dropped_bundles",
                "Bundles the disk quota removed before they were uploaded",
                None,
                &one(c(&u.dropped)),
            )?;
        }
        if let Some(a) = lock(&self.alerts).clone() {
            let c = |a: &std::sync::atomic::AtomicU64| Value::Counter(a.load(Ordering::Relaxed) as f64);
            family(&mut e, "autodump_alerts_posted", "Alerts posted to Alertmanager", None, &one(c(&a.posted)))?;
            family(
                &mut e,
                "autodump_alert_post_failures",
                "Posts to Alertmanager that failed (retried)",
                None,
                &one(c(&a.post_failures)),
            )?;
            family(
                &mut e,
                "autodump_alerts_expired",
                "Alerts given up: they would have ended before Alertmanager took them",
                None,
                &one(c(&a.expired)),
            )?;
            family(&mut e, "autodump_alert_polls", "Polls of Alertmanager's firing alerts", None, &one(c(&a.polls)))?;
            family(
                &mut e,
                "autodump_alert_poll_failures",
                "Polls of Alertmanager that failed",
                None,
                &one(c(&a.poll_failures)),
            )?;
        }
        Ok(())
    }
}

/// Serves `/metrics` on `addr` from a thread of its own.
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> Result<std::net::SocketAddr, String> {
    let server = tiny_http::Server::http(addr).map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    let bound = server.server_addr().to_ip().ok_or_else(|| format!("--metrics-addr {addr}: not an IP address"))?;
    std::thread::Builder::new()
        .name("autodump-metrics".into())
        .spawn(move || {
            let content_type = tiny_http::Header::from_bytes(
                &b"Content-Type"[..],
                &b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..],
            )
            .expect("a valid header");
            for request in server.incoming_requests() {
                let response = match (request.method(), request.url().split('?').next()) {
                    (tiny_http::Method::Get, Some("/metrics")) => {
                        tiny_http::Response::from_string(metrics.encode()).with_header(content_type.clone())
                    }
                    _ => tiny_http::Response::from_string("autodump: see /metrics\n").with_status_code(404),
                };
                let _ = request.respond(response);
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_follows_prometheus_naming() {
        let metrics = Arc::new(Metrics::default());
        lock(&metrics.snapshot).targets.push(TargetSnapshot {
            name: "api".into(),
            processes: 2,
            cpu_cores: 0.5,
            cpu_capacity_ratio: 0.25,
            rss_bytes: 1 << 20,
            threads: 8,
            fds: 20,
            lock_wait: 0.75,
            runtime: BTreeMap::new(),
        });
        metrics.bundle_written("api", "cpu");
        metrics.bundle_written("api", "cpu");
        let text = metrics.encode();
        for line in [
            "autodump_build_info{version=\"",
            "autodump_target_cpu_capacity_ratio{target=\"api\"} 0.25",
            "autodump_target_resident_memory_bytes{target=\"api\"} 1048576",
            "autodump_target_lock_wait{target=\"api\"} 0.75",
            "autodump_bundles_total{target=\"api\",reason=\"cpu\"} 2",
            "# TYPE autodump_agent_cpu_seconds counter",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        assert!(!text.contains("goroutines{"), "no Go target, no goroutines: {text}");
        let addr = serve("127.0.0.1:0", metrics).unwrap();
        let body = ureq::get(&format!("http://{addr}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
        assert!(body.contains("autodump_bundles_total"));
    }
}
