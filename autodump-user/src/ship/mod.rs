//! Off the host: every bundle queued for an S3-compatible store and announced to Alertmanager,
//! alerts from Alertmanager as triggers, and `/metrics` for Prometheus. Each runs on a thread of
//! its own; watching never waits on the network. This layer reads bundles on disk and their
//! typed summaries; the stages below never know it exists.

pub mod alertmanager;
pub mod alerts;
pub mod credentials;
pub mod matchers;
pub mod metrics;
pub mod queue;
pub mod s3;
pub mod uploader;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::write::Written;
use alertmanager::{Alertmanager, PostedAlert};
use alerts::AlertSender;
use metrics::Metrics;
use queue::Entry;
use s3::S3Url;
use uploader::Uploader;

/// How bundles leave the host, from the command line.
#[derive(Clone, Debug, Default)]
pub struct ShipSettings {
    /// Alertmanager's base URL (`--alertmanager`).
    pub alertmanager: Option<String>,
    /// The `severity` label of the alerts posted.
    pub severity: String,
    /// Posted alerts end (resolve) this long after the bundle.
    pub resolve_after: Duration,
    /// An HTTP address for a bundle, from `{bucket}`, `{key}` and `{path}` (`--bundle-url`).
    pub bundle_url: Option<String>,
    /// Bytes a second uploads send at most (`--upload-rate`).
    pub upload_rate: u64,
}

/// How one target's bundles leave the host: its name (in keys, labels, metrics) and store.
#[derive(Clone)]
pub struct Delivery {
    pub target: String,
    pub upload: Option<S3Url>,
    pub ship: std::rc::Rc<Shipping>,
}

impl Delivery {
    pub fn bundle_written(&self, bundle: &Written) {
        self.ship.bundle_written(&self.target, self.upload.as_ref(), bundle);
    }
}

/// What the agent sends off the host, shared by every target.
pub struct Shipping {
    host: String,
    settings: ShipSettings,
    /// Started when a target uploads.
    uploader: Option<Uploader>,
    alerts: Option<AlertSender>,
    pub metrics: Arc<Metrics>,
}

impl Shipping {
    /// Starts the threads the settings ask for; the queue lives under `out` (`--out`).
    pub fn start(settings: ShipSettings, uploads: bool, out: &Path) -> std::io::Result<Self> {
        let host = hostname();
        let metrics = Arc::new(Metrics::default());
        let uploader = match uploads {
            true => Some(Uploader::start(out, host.clone(), settings.upload_rate)?),
            false => None,
        };
        if let Some(u) = &uploader {
            metrics.set_upload(u.stats.clone());
        }
        let alerts = match &settings.alertmanager {
            Some(url) => Some(AlertSender::start(Alertmanager::new(url), metrics.alert_stats())?),
            None => None,
        };
        Ok(Self { host, settings, uploader, alerts, metrics })
    }

    /// A bundle was written for `target`: counted, queued for upload to `upload`, and announced.
    pub fn bundle_written(&self, target: &str, upload: Option<&S3Url>, written: &Written) {
        let (bundle, summary) = (written.path.as_path(), &written.summary);
        // The rule's metric, else the kind (manual, exit, alert, record).
        let why = summary.reason.metric.clone().unwrap_or_else(|| summary.reason.kind.clone());
        self.metrics.bundle_written(target, &why);
        let mut location = bundle.display().to_string();
        let mut key = None;
        if let (Some(uploader), Some(url)) = (&self.uploader, upload) {
            let entry = Entry {
                bundle: bundle.to_path_buf(),
                url: url.to_string(),
                target: queue::safe(target),
                queued_at: crate::collect::unix_now(SystemTime::now()),
                done: Vec::new(),
            };
            let prefix = entry.key_prefix(&url.prefix, &self.host);
            match uploader.queue(entry) {
                Ok(()) => {
                    location = url.object(&prefix);
                    key = Some(prefix);
                }
                Err(e) => tracing::warn!(bundle = %bundle.display(), "cannot queue the bundle for upload: {e}"),
            }
        }
        let Some(sender) = &self.alerts else { return };
        let now = SystemTime::now();
        let mut annotations = std::collections::BTreeMap::new();
        annotations.insert("summary".to_string(), summary.verdict.clone());
        annotations.insert("bundle".to_string(), location);
        if let Some(template) = &self.settings.bundle_url {
            let bucket = upload.map(|u| u.bucket.as_str()).unwrap_or_default();
            let url = template
                .replace("{bucket}", bucket)
                .replace("{key}", key.as_deref().unwrap_or_default())
                .replace("{path}", &bundle.display().to_string());
            annotations.insert("bundle_url".to_string(), url);
        }
        sender.send(PostedAlert {
            labels: alerts::labels(&self.host, target, &why, &self.settings.severity),
            annotations,
            starts_at: humantime::format_rfc3339_seconds(now).to_string(),
            ends_at: humantime::format_rfc3339_seconds(now + self.settings.resolve_after).to_string(),
            generator_url: String::new(),
        });
    }

    /// Whether `bundle` waits to be uploaded (retention keeps it unless the disk quota forces).
    pub fn pending(&self, bundle: &Path) -> bool {
        self.uploader.as_ref().is_some_and(|u| u.queue.contains(bundle))
    }

    /// Retention removed `bundle` before it was uploaded: counted, said, and dequeued.
    pub fn dropped(&self, bundle: &Path) {
        if let Some(u) = &self.uploader {
            u.queue.remove(bundle);
            u.stats.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(bundle = %bundle.display(), "the disk quota (--max-disk) removed a bundle before it was uploaded");
        }
    }

    /// Reads the store's endpoint and credentials again (SIGHUP).
    pub fn reload(&self) {
        if let Some(u) = &self.uploader {
            u.reload();
        }
    }

    /// Waits up to `timeout` for the upload queue to empty and the alerts to be posted (record
    /// mode, before exiting); false if some are left (the queue stays on disk for the next run).
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let uploaded = self.uploader.as_ref().is_none_or(|u| u.queue.is_empty());
            let posted = self.alerts.as_ref().is_none_or(|a| a.in_flight() == 0);
            if uploaded && posted {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// This host's name, as the kernel has it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
