//! Tests of the memory readers, on text as the kernel writes it and on this process.

use super::*;

const SMAPS: &str = "\
55d8a94c5000-55d8a94c7000 r--p 00000000 fe:00 247030                     /usr/bin/cat
Size:                  8 kB
Rss:                   8 kB
VmFlags: rd mr mw me
55d8aa000000-55d8aa100000 rw-p 00000000 00:00 0                          [heap]
Rss:                1024 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Rss:                 512 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Rss:                 256 kB
7f0000400000-7f0000500000 r--p 00000000 fe:00 12                         /usr/lib/with space.so (deleted)
Rss:                   4 kB
";

#[test]
fn sums_resident_size_per_mapping_name() {
    let (by_name, garbage) = parse_smaps(SMAPS);
    assert_eq!(garbage, 0);
    assert_eq!(by_name["/usr/bin/cat"], (8 * 1024, 1));
    assert_eq!(by_name["[heap]"], (1024 * 1024, 1));
    assert_eq!(by_name["[anon]"], (768 * 1024, 2), "unnamed anonymous mappings add up");
    assert_eq!(by_name["/usr/lib/with space.so (deleted)"], (4096, 1));
}

#[test]
fn garbage_is_counted_not_fatal() {
    let (by_name, garbage) = parse_smaps("Rss: 12 kB\nzzzz\n1-2 rw-p 0 0 0\nRss: lots kB\n\u{0}\u{1}-");
    assert!(by_name.is_empty());
    assert_eq!(garbage, 2);
    assert_eq!(parse_smaps("1-2 r 0 0 0 x\nRss: 99999999999999999999 kB\n").1, 1, "overflow is garbage");
}

#[test]
fn growth_is_ranked_and_new_mappings_count_from_zero() {
    let (before, _) = parse_smaps(SMAPS);
    let mut after = before.clone();
    after.insert("[heap]".into(), (9 << 20, 1));
    after.insert("/usr/lib/new.so".into(), (1 << 20, 1));
    after.insert("[anon]".into(), (1 << 10, 1)); // shrank
    let grown = top_growth(&before, &after, 10);
    let names: Vec<_> = grown.iter().map(|g| g.mapping.as_str()).collect();
    assert_eq!(names, ["[heap]", "/usr/lib/new.so"]);
    assert_eq!(grown[0].grown_bytes, (9 << 20) - (1 << 20));
    assert_eq!(grown[1].rss_start_bytes, 0);
    assert_eq!(top_growth(&before, &after, 1).len(), 1);
}

#[test]
fn reads_the_status_split() {
    let status = "Name:\tx\nRssAnon:\t    1200 kB\nRssFile:\t     300 kB\nRssShmem:\t       4 kB\n";
    assert_eq!(
        parse_status_split(status),
        Some(RssSplit { anon_bytes: 1200 * 1024, file_bytes: 300 * 1024, shmem_bytes: 4096 })
    );
    assert_eq!(parse_status_split("RssAnon: x kB\n"), None);
    let mine = read_split(std::process::id()).unwrap();
    assert!(mine.anon_bytes > 0 && mine.file_bytes > 0);
}

#[test]
fn memory_stat_keeps_numeric_keys() {
    let stat = parse_memory_stat("anon 4096\nfile 8192\nbroken\nweird x\n");
    assert_eq!(stat.into_iter().collect::<Vec<_>>(), [("anon".into(), 4096), ("file".into(), 8192)]);
}

#[test]
fn a_window_measures_growth_from_its_start() {
    let me = std::process::id();
    let mut watch = MemoryWatch::new(me, Duration::from_secs(10), 60.0);
    watch.observe(100.0, None);
    watch.observe(105.0, None); // too soon: no second snapshot
    assert_eq!(watch.snapshots.len(), 1);
    // A mapping of its own name: other tests in this process allocate and free at the same time.
    const SIZE: usize = 8 << 20;
    // SAFETY: plain syscalls; the mapping is written within its length and unmapped after.
    let grown = unsafe {
        let fd = libc::memfd_create(c"autodump-memory-test".as_ptr(), 0);
        assert!(fd >= 0 && libc::ftruncate(fd, SIZE as i64) == 0);
        let at = libc::mmap(std::ptr::null_mut(), SIZE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
        assert_ne!(at, libc::MAP_FAILED);
        std::ptr::write_bytes(at as *mut u8, 1, SIZE);
        let report = watch.report(100.0, 120.0);
        libc::munmap(at, SIZE);
        libc::close(fd);
        report
    };
    let report = grown;
    assert_eq!(report.mappings_from, Some(100.0));
    let ours = report.grown_mappings.iter().find(|g| g.mapping.starts_with("/memfd:autodump-memory-test"));
    assert_eq!(ours.map(|g| g.grown_bytes), Some(SIZE as i64), "{:?}", report.grown_mappings);
    assert!(report.rss_end.is_some());
    assert!(report.rss_start.unwrap().shmem_bytes + (7 << 20) <= report.rss_end.unwrap().shmem_bytes);
}

#[test]
fn statm_gives_resident_and_shared_pages() {
    assert_eq!(parse_statm_pages("1000 250 10 1 0 100 0\n"), Some((250, 10)));
    assert_eq!(parse_statm_pages("1000 250"), None);
    assert_eq!(parse_statm_pages("1000 x 10"), None);
}

#[test]
fn a_calm_process_keeps_its_split_and_a_moved_one_is_read_again() {
    let mut watch = MemoryWatch::new(std::process::id(), std::time::Duration::from_secs(3600), 60.0);
    watch.observe(0.0, None);
    let first = watch.latest_split().expect("our own status");
    assert!(watch.statm.is_some());
    // Grow by 64 MiB of touched anonymous memory: statm moves, and the split follows it.
    let grown = vec![1u8; 64 << 20];
    watch.observe(1.0, None);
    let second = watch.latest_split().expect("our own status");
    assert!(second.anon_bytes >= first.anon_bytes + (60 << 20), "{first:?} then {second:?}");
    drop(grown);
    // While the stat's size and resident pages stay, statm waits; past STATM_EVERY_S, or once
    // they move, it is read.
    watch.observe(2.0, Some((1, 1)));
    let before = watch.latest_split().expect("our own status").anon_bytes;
    let grown = vec![1u8; 64 << 20];
    watch.observe(3.0, Some((1, 1)));
    assert_eq!(watch.latest_split().unwrap().anon_bytes, before);
    watch.observe(4.0, Some((1, 2)));
    assert!(watch.latest_split().unwrap().anon_bytes >= before + (60 << 20));
    drop(grown);
    watch.observe(5.0, Some((1, 2)));
    watch.observe(5.0 + STATM_EVERY_S, Some((1, 2)));
    assert!(watch.latest_split().unwrap().anon_bytes < before + (30 << 20));
}
