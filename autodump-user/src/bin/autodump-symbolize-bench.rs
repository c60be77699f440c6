//! Benchmark helper for `cargo xtask bench` (not installed for users): how fast the agent's
//! symbolizer names the stacks of one executable. It maps FILE executable into this process,
//! as a target would, then times the first symbolization (which loads the file's tables) and
//! the throughput over STACKS stacks of 16 frames drawn from 5,000 distinct text addresses
//! (unique addresses are looked up once and cached, as in the agent). Prints one JSON line.

use std::{os::fd::AsRawFd, time::Instant};

use autodump::symbolize::Symbolizer;
use object::{Object, ObjectSection};

const FRAMES: usize = 16;
const DISTINCT: usize = 5_000;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| anyhow::anyhow!("usage: autodump-symbolize-bench FILE [STACKS]"))?;
    let stacks: usize = args.next().map_or(Ok(200_000), |s| s.parse())?;
    let (text_offset, text_size, len) = {
        let data = std::fs::read(&path)?;
        let elf = object::File::parse(&*data)?;
        let text = elf.section_by_name(".text").and_then(|s| s.file_range());
        let (offset, size) = text.ok_or_else(|| anyhow::anyhow!("{path} has no .text"))?;
        (offset, size, data.len())
    };
    let file = std::fs::File::open(&path)?;
    // SAFETY: a fresh private read-only, executable mapping of a whole file; never written.
    let base = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_EXEC, libc::MAP_PRIVATE, file.as_raw_fd(), 0)
    };
    anyhow::ensure!(base != libc::MAP_FAILED, "cannot map {path}: {}", std::io::Error::last_os_error());
    let base = base as u64;

    // Deterministic pseudo-random text addresses.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let pool: Vec<u64> = (0..DISTINCT).map(|_| base + text_offset + next() % text_size).collect();

    let mut symbolizer = Symbolizer::new(std::process::id(), autodump::runtimes::file_readers());
    symbolizer.refresh_maps();
    let started = Instant::now();
    let first = symbolizer.user(&pool[..1]);
    let first_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let mut named = 0usize;
    for _ in 0..stacks {
        let stack: Vec<u64> = (0..FRAMES).map(|_| pool[next() as usize % DISTINCT]).collect();
        named += symbolizer.user(&stack).iter().filter(|l| l.unnamed.is_none()).count();
    }
    let seconds = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status")?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    println!(
        "{{\"file\":{path:?},\"file_mib\":{:.1},\"first_ms\":{first_ms:.1},\"first_named\":{},\"stacks\":{stacks},\"stacks_per_s\":{:.0},\"named_frames\":{:.4},\"rss_mib\":{:.1}}}",
        len as f64 / 1048576.0,
        first[0].unnamed.is_none(),
        stacks as f64 / seconds,
        named as f64 / (stacks * FRAMES) as f64,
        rss_kib as f64 / 1024.0
    );
    Ok(())
}
