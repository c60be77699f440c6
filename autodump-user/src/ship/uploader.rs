//! Uploads queued bundles in the background, on a thread of its own, so that watching never
//! waits on the network. Each bundle's files go to `PREFIX/HOSTNAME/TARGET/BUNDLE/FILE`, one at a
//! time, streamed from disk, `summary.json` last: a reader that sees it knows the bundle is whole.
//! A failure is retried with exponential backoff and jitter; the queue is on disk, so an agent
//! that restarts resumes it. A store that refuses (wrong key, missing bucket, access denied) is
//! said once per change of state, never once per retry.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use super::{
    queue::{Entry, Queue},
    s3::{S3Settings, S3Store, S3Url},
};

/// The first retry comes after this; each failure doubles it, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub enum Event {
    Queued(Entry),
    /// Read the endpoint and credentials again (SIGHUP), and retry everything now.
    Reload,
}

/// What the uploader has done, for `/metrics` and the log.
#[derive(Default)]
pub struct UploadStats {
    pub queued: AtomicU64,
    pub uploaded_bundles: AtomicU64,
    pub uploaded_bytes: AtomicU64,
    pub failures: AtomicU64,
    /// Bundles retention removed before they were uploaded (the disk quota forced it).
    pub dropped: AtomicU64,
    /// Unix seconds the oldest queued bundle was queued at (0: none).
    pub oldest_queued_at: Mutex<f64>,
}

/// The handle the agent keeps: queue a bundle, reload, read the stats.
pub struct Uploader {
    tx: mpsc::Sender<Event>,
    pub queue: Queue,
    pub stats: Arc<UploadStats>,
    pub host: String,
}

impl Uploader {
    /// Starts the upload thread over the queue in `out`, resuming what it holds.
    /// `rate`: bytes a second a file is sent at most.
    pub fn start(out: &std::path::Path, host: String, rate: u64) -> std::io::Result<Self> {
        let queue = Queue::open(out)?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(UploadStats::default());
        let worker = Worker {
            queue: queue.clone(),
            stats: stats.clone(),
            host: host.clone(),
            rate,
            stores: HashMap::new(),
            settings: None,
            state: HashMap::new(),
            schedule: HashMap::new(),
        };
        std::thread::Builder::new().name("autodump-upload".into()).spawn(move || worker.run(rx))?;
        Ok(Self { tx, queue, stats, host })
    }

    /// Queues `entry` (written to disk first) for upload.
    pub fn queue(&self, entry: Entry) -> std::io::Result<()> {
        self.queue.put(&entry)?;
        let _ = self.tx.send(Event::Queued(entry));
        Ok(())
    }

    pub fn reload(&self) {
        let _ = self.tx.send(Event::Reload);
    }
}

struct Worker {
    queue: Queue,
    stats: Arc<UploadStats>,
    host: String,
    rate: u64,
    stores: HashMap<String, S3Store>,
    /// The endpoint and credentials, or why there are none.
    settings: Option<Result<S3Settings, String>>,
    /// Per store URL: the last failure said (None: working).
    state: HashMap<String, Option<String>>,
    /// Per bundle: failures so far and when to try next.
    schedule: HashMap<PathBuf, (u32, Instant)>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Event>) {
        let mut pending: Vec<Entry> = self.queue.entries();
        loop {
            self.publish(&pending);
            let now = Instant::now();
            let due = pending.iter().position(|e| self.schedule.get(&e.bundle).is_none_or(|(_, at)| *at <= now));
            let event = match due {
                Some(i) => {
                    let entry = pending.remove(i);
                    if let Some(entry) = self.upload(entry) {
                        pending.push(entry);
                    }
                    rx.try_recv().ok()
                }
                None => {
                    let next = self.schedule.values().map(|(_, at)| *at).min();
                    let wait = next.map_or(Duration::from_secs(60), |at| at.saturating_duration_since(now));
                    match rx.recv_timeout(wait) {
                        Ok(event) => Some(event),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            };
            match event {
                Some(Event::Queued(entry)) => {
                    pending.retain(|e| e.bundle != entry.bundle);
                    pending.push(entry);
                }
                Some(Event::Reload) => {
                    (self.settings, self.stores) = (None, HashMap::new());
                    self.schedule.clear();
                }
                None => {}
            }
            // Bundles retention removed meanwhile are no longer waited for.
            pending.retain(|e| self.queue.contains(&e.bundle));
        }
    }

    /// Uploads what is left of `entry`; gives it back if it must be tried again.
    fn upload(&mut self, mut entry: Entry) -> Option<Entry> {
        let url = entry.url.clone();
        let result = self.try_upload(&mut entry);
        match result {
            Ok(bytes) => {
                self.queue.remove(&entry.bundle);
                self.schedule.remove(&entry.bundle);
                self.stats.uploaded_bundles.fetch_add(1, Ordering::Relaxed);
                self.stats.uploaded_bytes.fetch_add(bytes, Ordering::Relaxed);
                tracing::info!(bundle = %entry.bundle.display(), url, "bundle uploaded");
                self.say(&url, None);
                None
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                let failures = self.schedule.get(&entry.bundle).map_or(0, |s| s.0) + 1;
                let delay = backoff(failures);
                self.schedule.insert(entry.bundle.clone(), (failures, Instant::now() + delay));
                tracing::debug!(bundle = %entry.bundle.display(), retry_in_s = delay.as_secs(), "upload failed: {e}");
                self.say(&url, Some(e));
                Some(entry)
            }
        }
    }

    fn try_upload(&mut self, entry: &mut Entry) -> Result<u64, String> {
        let url = S3Url::parse(&entry.url)?;
        let settings = self
            .settings
            .get_or_insert_with(|| S3Settings::from_env(|k| std::env::var(k).ok()).map_err(|e| e.to_string()))
            .clone()?;
        if !self.stores.contains_key(&entry.url) {
            let store = S3Store::new(&url, settings, self.rate).map_err(|e| e.to_string())?;
            self.stores.insert(entry.url.clone(), store);
        }
        let store = &self.stores[&entry.url];
        let prefix = entry.key_prefix(&url.prefix, &self.host);
        let mut files: Vec<String> = std::fs::read_dir(&entry.bundle)
            .map_err(|e| format!("{}: {e}", entry.bundle.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        // Sorted, summary.json last: it tells a reader the bundle is complete.
        files.sort_by_key(|f| (f == "summary.json", f.clone()));
        files.retain(|f| !entry.done.contains(f));
        let mut bytes = 0;
        for file in &files {
            bytes += store.put_file(&format!("{prefix}{file}"), &entry.bundle.join(file)).map_err(|e| e.to_string())?;
            entry.done.push(file.clone());
            // Progress survives a restart: finished files are not sent again.
            let _ = self.queue.put(entry);
        }
        Ok(bytes)
    }

    /// Logs a store's state when it changes: once per failure kind, once when it works again.
    fn say(&mut self, url: &str, failure: Option<String>) {
        let before = self.state.insert(url.to_string(), failure.clone()).flatten();
        match (before, failure) {
            (Some(_), None) => tracing::info!(url, "uploads work again"),
            (before, Some(now)) if before.as_deref() != Some(now.as_str()) => {
                tracing::warn!(url, "uploads fail: {now}; bundles stay on disk and are retried")
            }
            _ => {}
        }
    }

    fn publish(&self, pending: &[Entry]) {
        self.stats.queued.store(pending.len() as u64, Ordering::Relaxed);
        let oldest = pending.iter().map(|e| e.queued_at).fold(f64::INFINITY, f64::min);
        *self.stats.oldest_queued_at.lock().unwrap_or_else(|e| e.into_inner()) =
            if oldest.is_finite() { oldest } else { 0.0 };
    }
}

/// Exponential, capped, with ±25% jitter so that many agents do not retry in step.
fn backoff(failures: u32) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let jitter = 0.75 + 0.5 * f64::from(nanos % 1000) / 1000.0;
    base.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        let secs = |n| backoff(n).as_secs_f64();
        assert!((1.5..=2.5).contains(&secs(1)), "{}", secs(1));
        assert!((3.0..=5.0).contains(&secs(2)));
        assert!((22.5..=37.5).contains(&secs(20)), "capped: {}", secs(20));
    }
}
