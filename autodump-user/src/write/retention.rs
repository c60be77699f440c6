//! Keeps the output directory within `--max-bundles` and `--max-disk`: the oldest bundles go
//! first, never the one just written, and nothing that is not a bundle is touched.

use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

struct Found {
    path: PathBuf,
    written: SystemTime,
    bytes: u64,
}

/// Bundles in `out`: visible directories holding a summary.json.
fn bundles(out: &Path) -> Vec<Found> {
    let Ok(entries) = fs::read_dir(out) else { return Vec::new() };
    let mut found: Vec<Found> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let summary = fs::symlink_metadata(e.path().join("summary.json")).ok()?;
            let bytes = fs::read_dir(e.path()).ok()?.flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
            Some(Found { path: e.path(), written: summary.modified().ok()?, bytes })
        })
        .collect();
    found.sort_by(|a, b| a.written.cmp(&b.written).then_with(|| a.path.cmp(&b.path)));
    found
}

/// Removes the oldest bundles until both limits hold; returns what was removed.
pub fn prune(out: &Path, max_bundles: usize, max_disk: u64, keep: &Path) -> Vec<PathBuf> {
    let mut found = bundles(out);
    let mut total: u64 = found.iter().map(|b| b.bytes).sum();
    let mut removed = Vec::new();
    while found.len() > max_bundles.max(1) || total > max_disk {
        let Some(i) = found.iter().position(|b| b.path != keep) else { break };
        let oldest = found.remove(i);
        if fs::remove_dir_all(&oldest.path).is_ok() {
            total -= oldest.bytes;
            removed.push(oldest.path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(out: &Path, name: &str, bytes: usize) -> PathBuf {
        let dir = out.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("summary.json"), vec![b'x'; bytes]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(15)); // distinct modification times
        dir
    }

    #[test]
    fn removes_oldest_first_within_both_limits() {
        let out = std::env::temp_dir().join(format!("autodump-retention-{}", std::process::id()));
        let _ = fs::remove_dir_all(&out);
        let a = bundle(&out, "a", 100);
        let b = bundle(&out, "b", 100);
        let c = bundle(&out, "c", 100);
        fs::create_dir_all(out.join("not-a-bundle")).unwrap();
        fs::create_dir_all(out.join(".tmp-in-progress")).unwrap();
        assert_eq!(prune(&out, 2, u64::MAX, &c), vec![a.clone()]);
        assert_eq!(prune(&out, 10, 150, &c), vec![b.clone()]);
        assert!(c.exists() && out.join("not-a-bundle").exists() && out.join(".tmp-in-progress").exists());
        // The bundle just written stays even when it alone is over the limit.
        assert!(prune(&out, 10, 10, &c).is_empty());
        fs::remove_dir_all(&out).unwrap();
    }
}
