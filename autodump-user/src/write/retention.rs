//! Keeps the output directory within `--max-bundles` and `--max-disk`: the oldest bundles go
//! first, never the one just written, and nothing that is not a bundle is touched. A bundle
//! still waiting to be uploaded stays, unless the disk quota cannot be kept otherwise.

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

/// What pruning removed.
#[derive(Debug, Default, PartialEq)]
pub struct Pruned {
    pub removed: Vec<PathBuf>,
    /// Of those, bundles that were waiting to be uploaded (the disk quota forced it).
    pub not_uploaded: Vec<PathBuf>,
}

/// Removes the oldest bundles until both limits hold. Bundles `pending` says wait for upload
/// are kept, unless the disk quota still does not hold once every other bundle is gone.
pub fn prune(out: &Path, max_bundles: usize, max_disk: u64, keep: &Path, pending: &dyn Fn(&Path) -> bool) -> Pruned {
    let mut found = bundles(out);
    let mut total: u64 = found.iter().map(|b| b.bytes).sum();
    let mut pruned = Pruned::default();
    loop {
        let over_count = found.len() > max_bundles.max(1);
        let over_disk = total > max_disk;
        let removable = |b: &Found| b.path != keep && (over_disk || !pending(&b.path));
        let Some(i) = found
            .iter()
            .position(|b| b.path != keep && !pending(&b.path))
            .filter(|_| over_count || over_disk)
            .or_else(|| found.iter().position(removable).filter(|_| over_disk))
        else {
            break;
        };
        let oldest = found.remove(i);
        if fs::remove_dir_all(&oldest.path).is_ok() {
            total -= oldest.bytes;
            if pending(&oldest.path) {
                pruned.not_uploaded.push(oldest.path.clone());
            }
            pruned.removed.push(oldest.path);
        }
    }
    pruned
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
        let none = |_: &Path| false;
        assert_eq!(prune(&out, 2, u64::MAX, &c, &none).removed, vec![a.clone()]);
        assert_eq!(prune(&out, 10, 150, &c, &none).removed, vec![b.clone()]);
        assert!(c.exists() && out.join("not-a-bundle").exists() && out.join(".tmp-in-progress").exists());
        // The bundle just written stays even when it alone is over the limit.
        assert!(prune(&out, 10, 10, &c, &none).removed.is_empty());
        fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn bundles_waiting_for_upload_stay_unless_the_disk_quota_forces() {
        let out = std::env::temp_dir().join(format!("autodump-retention-upload-{}", std::process::id()));
        let _ = fs::remove_dir_all(&out);
        let (a, b, c, d) =
            (bundle(&out, "a", 100), bundle(&out, "b", 100), bundle(&out, "c", 100), bundle(&out, "d", 100));
        let waiting = |p: &Path| p.ends_with("a") || p.ends_with("b");
        // Two bundles too many: the oldest uploaded one goes, the waiting ones stay.
        assert_eq!(prune(&out, 2, u64::MAX, &d, &waiting), Pruned { removed: vec![c.clone()], not_uploaded: vec![] });
        // Over the disk quota with only waiting bundles left: the oldest goes, and it is said.
        let pruned = prune(&out, 10, 250, &d, &waiting);
        assert_eq!(pruned, Pruned { removed: vec![a.clone()], not_uploaded: vec![a.clone()] });
        assert!(b.exists() && d.exists());
        fs::remove_dir_all(&out).unwrap();
    }
}
