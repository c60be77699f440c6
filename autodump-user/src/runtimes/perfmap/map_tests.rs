use std::{io::Write, os::unix::fs::PermissionsExt};

use super::*;

fn map_of(text: &str) -> PerfMap {
    let mut map = PerfMap::at(PathBuf::from("/nonexistent"), 0, 1 << 20);
    map.take(text.as_bytes());
    map
}

#[test]
fn both_formats_and_names_with_spaces() {
    let map = map_of("7f00001000 40 LazyCompile:*fib /srv/app.js:3:13\n0x7f00002000 0x10 java.lang.String::hashCode\n");
    assert_eq!(map.name(0x7f_0000_1000).map(|n| &**n), Some("LazyCompile:*fib /srv/app.js:3:13"));
    assert_eq!(map.name(0x7f_0000_103f).map(|n| &**n), Some("LazyCompile:*fib /srv/app.js:3:13"));
    assert_eq!(map.name(0x7f_0000_1040), None, "the end is exclusive");
    assert_eq!(map.name(0x7f_0000_2008).map(|n| &**n), Some("java.lang.String::hashCode"));
    assert_eq!(map.name(0x7f_0000_0fff), None);
    assert_eq!(map.stats.lines, 2);
}

#[test]
fn the_last_line_wins_where_code_was_reused() {
    let map = map_of("1000 100 old_a\n1100 100 old_b\n1080 100 new\n1300 10 kept\n");
    assert_eq!(map.name(0x1000), None, "old_a overlapped new, and is gone");
    assert_eq!(map.name(0x1090).map(|n| &**n), Some("new"));
    assert_eq!(map.name(0x1150).map(|n| &**n), Some("new"));
    assert_eq!(map.name(0x1190), None, "old_b is gone too");
    assert_eq!(map.name(0x1305).map(|n| &**n), Some("kept"));
    assert_eq!(map.len(), 2);
}

#[test]
fn lines_split_across_reads_and_garbage_are_counted() {
    let mut map = map_of("1000 10 fir");
    assert!(map.is_empty());
    map.take(b"st\nzz 10 bad\n2000\n\xff\xfe 1 x\n3000 10 \n");
    assert_eq!(map.name(0x1005).map(|n| &**n), Some("first"));
    assert_eq!((map.stats.lines, map.stats.malformed), (5, 4));
    let long = vec![b'a'; 3 * MAX_LINE];
    map.take(b"4000 10 ");
    map.take(&long);
    map.take(b"\n5000 10 after\n");
    assert_eq!(map.name(0x4000), None, "an overlong line is skipped");
    assert_eq!(map.name(0x5000).map(|n| &**n), Some("after"));
    assert_eq!(map.stats.malformed, 5);
}

#[test]
fn memory_is_bounded_and_the_oldest_lines_go_first() {
    let mut map = PerfMap::at(PathBuf::from("/nonexistent"), 0, 64 * 1024);
    for i in 0..100_000u64 {
        map.take(format!("{:x} 10 function_number_{i}\n", 0x10_0000 + i * 0x10).as_bytes());
    }
    assert!(map.bytes + map.order.len() * 16 <= 64 * 1024);
    assert!(map.len() > 100, "{} entries kept", map.len());
    assert_eq!(map.stats.left_out, 100_000 - map.len() as u64);
    assert_eq!(map.name(0x10_0000), None, "the first line went");
    let last = 0x10_0000 + 99_999 * 0x10;
    assert_eq!(map.name(last).map(|n| &**n), Some("function_number_99999"));
}

#[test]
fn a_file_is_read_as_it_grows_and_again_when_replaced() {
    let dir = std::env::temp_dir().join(format!("autodump-perfmap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("perf-1.map");
    let uid = unsafe { libc::geteuid() };
    let mut map = PerfMap::at(path.clone(), uid, 1 << 20);
    assert!(!map.update().unwrap(), "no file yet");
    let mut file = std::fs::File::create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    file.write_all(b"1000 10 a\n2000 10 b").unwrap();
    assert!(map.update().unwrap());
    assert_eq!((map.len(), map.name(0x2000)), (1, None), "b's line is not whole yet");
    file.write_all(b"\n").unwrap();
    assert!(map.update().unwrap());
    assert!(map.name(0x2000).is_some());
    assert!(!map.update().unwrap(), "nothing new");
    drop(file);
    let replacement = dir.join("new.map");
    std::fs::write(&replacement, "3000 10 c\n").unwrap();
    std::fs::set_permissions(&replacement, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&replacement, &path).unwrap();
    assert!(map.update().unwrap());
    assert_eq!((map.len(), map.stats.rereads), (1, 1));
    assert!(map.name(0x1000).is_none() && map.name(0x3000).is_some());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(matches!(map.update(), Err(PerfMapError::Writable { .. })));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut other = PerfMap::at(path.clone(), uid + 1, 1 << 20);
    assert!(matches!(other.update(), Err(PerfMapError::NotOwned { .. })));
    let link = dir.join("link.map");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let mut linked = PerfMap::at(link, uid, 1 << 20);
    assert!(matches!(linked.update(), Err(PerfMapError::Io { .. })), "a symbolic link is not followed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn this_process_has_a_namespace_pid_and_uid() {
    let (ns_pid, uid, gid) = ns_pid_and_ids(std::process::id()).unwrap();
    assert_eq!(ns_pid, std::process::id());
    assert_eq!((uid, gid), unsafe { (libc::geteuid(), libc::getegid()) });
}
