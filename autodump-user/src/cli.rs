//! The command line: every flag documented, every tunable number with a named default.

use std::{path::PathBuf, time::Duration};

use clap::Parser;

/// Every default a user may want to change, in one place.
pub mod defaults {
    /// On-CPU sampling frequency (Hz). 99, not 100, to avoid sampling in lockstep with timers.
    pub const FREQUENCY_HZ: u64 = 99;
    /// Highest accepted sampling frequency (Hz).
    pub const MAX_FREQUENCY_HZ: u64 = 10_000;
    /// Where bundles go. /var/tmp survives reboots, unlike /tmp on many hosts.
    pub const OUT_DIR: &str = "/var/tmp/autodump";
    /// How often the agent drains the kernel maps.
    pub const INTERVAL: &str = "1s";
    /// Stack-map slots per generation; more slots mean fewer hash collisions (counted when they happen).
    pub const STACK_SLOTS: u32 = 8192;
    /// Entries per generation of the sample-count and off-CPU totals maps.
    pub const COUNT_SLOTS: u32 = 16384;
    /// Threads of the target that can be blocked at once and still be accounted.
    pub const THREAD_SLOTS: u32 = 16384;
}

const EXAMPLES: &str = "\
Examples:
  sudo autodump-agent --pid 1234 --duration 10s
      Record 10 seconds of process 1234, write one bundle under /var/tmp/autodump, print its path.
  sudo autodump-agent --pid $(pidof my-service) --out ./bundles --frequency 199
      Record until Ctrl-C or until the process exits, sampling at 199 Hz.

Exit codes: 0 ok, 1 internal error, 2 invalid arguments, 3 no such process,
4 missing privileges, 5 kernel unsupported, 6 output directory unusable.";

/// Out-of-process eBPF profiler: records where a process spends time on and off the CPU,
/// and writes flamegraphs, pprof profiles and folded stacks into a bundle directory.
#[derive(Debug, Parser)]
#[command(name = "autodump-agent", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Process id of the service to profile (all its threads, including ones started later).
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: u32,

    /// Record for this long, then write one bundle and exit (e.g. 10s, 1m30s).
    /// Without it, record until Ctrl-C (SIGINT/SIGTERM) or until the target exits.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Directory that receives bundles; created if missing.
    #[arg(short, long, default_value = defaults::OUT_DIR)]
    pub out: PathBuf,

    /// On-CPU sampling frequency in Hz, per CPU.
    #[arg(short = 'F', long, default_value_t = defaults::FREQUENCY_HZ,
          value_parser = clap::value_parser!(u64).range(1..=defaults::MAX_FREQUENCY_HZ))]
    pub frequency: u64,

    /// How often kernel maps are drained into the agent (e.g. 500ms, 2s).
    #[arg(long, default_value = defaults::INTERVAL, value_parser = parse_duration)]
    pub interval: Duration,

    /// Stack-map slots per generation (kernel memory: about 1 KiB each, two generations).
    #[arg(long, default_value_t = defaults::STACK_SLOTS, value_parser = clap::value_parser!(u32).range(64..=1_048_576))]
    pub stack_slots: u32,

    /// Entries per generation of the sample-count and off-CPU totals maps.
    #[arg(long, default_value_t = defaults::COUNT_SLOTS, value_parser = clap::value_parser!(u32).range(64..=4_194_304))]
    pub count_slots: u32,

    /// How many of the target's threads can be blocked at once and still be accounted.
    #[arg(long, default_value_t = defaults::THREAD_SLOTS, value_parser = clap::value_parser!(u32).range(64..=4_194_304))]
    pub thread_slots: u32,

    /// The kernel's BTF, which describes its types (needed for the sched_switch probe).
    #[arg(long, default_value = crate::probes::btf::VMLINUX_BTF)]
    pub btf: PathBuf,

    /// Log filter, as in RUST_LOG (e.g. info, debug, autodump=trace).
    #[arg(long, default_value = "info", env = "AUTODUMP_LOG")]
    pub log: String,
}

/// A positive duration in humantime syntax ("10s", "250ms", "1m30s"); a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let parsed = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("'{text}' is not a duration ({e}); write it like 10s, 500ms or 2m"))?,
    };
    if parsed.is_zero() {
        return Err(format!("'{text}' is zero; give a positive duration like 10s"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("autodump-agent").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_apply() {
        let cli = parse(&["--pid", "42"]).unwrap();
        assert_eq!(cli.pid, 42);
        assert_eq!(cli.frequency, defaults::FREQUENCY_HZ);
        assert_eq!(cli.duration, None);
        assert_eq!(cli.out, PathBuf::from(defaults::OUT_DIR));
        assert_eq!(cli.interval, Duration::from_secs(1));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("abc").unwrap_err().contains("not a duration"));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--pid", "1", "--duration", "abc"][..],
            &["--pid", "1", "--frequency", "0"],
            &["--pid", "1", "--frequency", "100000"],
            &["--pid", "0"],
            &["--pid", "-5"],
            &["--pid", "x"],
            &[],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?} should be a usage error");
        }
    }
}
