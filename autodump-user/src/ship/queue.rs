//! The upload queue on disk: one small JSON file per bundle waiting to be uploaded, in
//! `OUT/.upload-queue/`, written when the bundle is, and removed once every file is in the store.
//! An agent that restarts resumes it; retention keeps queued bundles (see `write::retention`).

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// The queue's directory under the agent's `--out`.
pub const QUEUE_DIR: &str = ".upload-queue";

/// One bundle to upload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// The key's target part (the target's name, made safe for a key).
    pub target: String,
    /// Unix seconds.
    pub queued_at: f64,
    /// Files already in the store (`summary.json` always goes last).
    #[serde(default)]
    pub done: Vec<String>,
}

impl Entry {
    /// `PREFIX/HOSTNAME/TARGET/BUNDLE/`: where the bundle's files go.
    pub fn key_prefix(&self, prefix: &str, host: &str) -> String {
        let bundle = self.bundle.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let parts = [prefix, &safe(host), &self.target, &bundle];
        let joined: Vec<&str> = parts.iter().map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()).collect();
        joined.join("/") + "/"
    }
}

/// A name made safe for one part of an object key: letters, digits and `.-_:` kept, the rest `_`.
pub fn safe(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-:".contains(c) { c } else { '_' }).collect();
    s.trim_matches('_').to_string()
}

/// The queue of one agent.
#[derive(Clone, Debug)]
pub struct Queue {
    dir: PathBuf,
}

impl Queue {
    pub fn open(out: &Path) -> std::io::Result<Self> {
        let dir = out.join(QUEUE_DIR);
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The entry file of `bundle` (named by a hash of its path, so bundles of two output
    /// directories never share one).
    fn path_of(&self, bundle: &Path) -> PathBuf {
        // FNV-1a: stable across runs, unlike the standard hasher.
        let hash = bundle
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        self.dir.join(format!("{hash:016x}.json"))
    }

    /// Writes (or rewrites) `entry`, atomically.
    pub fn put(&self, entry: &Entry) -> std::io::Result<()> {
        let path = self.path_of(&entry.bundle);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(entry).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    pub fn remove(&self, bundle: &Path) {
        let _ = std::fs::remove_file(self.path_of(bundle));
    }

    /// No bundle waits.
    pub fn is_empty(&self) -> bool {
        std::fs::read_dir(&self.dir)
            .map_or(true, |d| !d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "json")))
    }

    pub fn contains(&self, bundle: &Path) -> bool {
        self.path_of(bundle).exists()
    }

    /// Every entry, oldest first. An entry that does not parse, or whose bundle is gone, is
    /// dropped (and said).
    pub fn entries(&self) -> Vec<Entry> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut entries: Vec<Entry> = dir
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let read = std::fs::read(e.path()).ok().and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
                match read {
                    Some(entry) if entry.bundle.join("summary.json").exists() => Some(entry),
                    _ => {
                        tracing::warn!(entry = %e.path().display(), "upload queue entry unreadable or its bundle gone; dropped");
                        let _ = std::fs::remove_file(e.path());
                        None
                    }
                }
            })
            .collect();
        entries.sort_by(|a, b| a.queued_at.total_cmp(&b.queued_at));
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_a_restart_and_keys_are_safe() {
        let out = std::env::temp_dir().join(format!("autodump-queue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let bundle = out.join("app-1-20261204T000000Z-rule");
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join("summary.json"), b"{}").unwrap();
        let queue = Queue::open(&out).unwrap();
        let mut entry = Entry {
            bundle: bundle.clone(),
            url: "s3://b/p".into(),
            target: safe("exe:/usr/bin/app"),
            queued_at: 1.0,
            done: vec![],
        };
        queue.put(&entry).unwrap();
        entry.done.push("cpu.svg".into());
        queue.put(&entry).unwrap();
        let again = Queue::open(&out).unwrap();
        assert_eq!(again.entries(), vec![entry.clone()]);
        assert!(again.contains(&bundle));
        assert_eq!(entry.key_prefix("prod", "web 1"), "prod/web_1/exe:_usr_bin_app/app-1-20261204T000000Z-rule/");
        assert_eq!(entry.key_prefix("", "h"), "h/exe:_usr_bin_app/app-1-20261204T000000Z-rule/");
        std::fs::remove_dir_all(&bundle).unwrap();
        assert!(again.entries().is_empty(), "a bundle gone is dropped from the queue");
        std::fs::remove_dir_all(&out).unwrap();
    }
}
