//! The command line: flags, defaults and what they refuse.

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("autodump-agent").chain(args.iter().copied()))
}

#[test]
fn defaults_apply() {
    let cli = parse(&["--pid", "42"]).unwrap();
    assert_eq!(cli.pid, Some(42));
    assert_eq!(cli.frequency, defaults::FREQUENCY_HZ);
    assert_eq!(cli.duration, None);
    assert_eq!(cli.out, PathBuf::from(defaults::OUT_DIR));
    assert_eq!(cli.interval, Duration::from_secs(1));
}

#[test]
fn watch_flags_parse() {
    let cli = parse(&["--pid", "1", "--rule", "cpu:abs=50%", "--rule", "fds:off", "--on-exit", "always"]).unwrap();
    assert_eq!(cli.rules.len(), 2);
    assert_eq!(cli.rules[1], (crate::collect::metrics::Metric::Fds, None));
    assert_eq!(cli.on_exit, OnExit::Always);
    assert_eq!(cli.lookback, Duration::from_secs(30));
    let err = parse(&["--pid", "1", "--rule", "disk:min=1"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("unknown metric"));
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
        &["--pid", "1", "--exe", "/bin/x"],
        &["--comm", "a", "--unit", "b"],
    ] {
        let err = parse(args).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?} should be a usage error");
    }
}
