//! JFR, HotSpot's own profiler, as a reference: the execution samples of a recording the JVM
//! wrote (`-XX:StartFlightRecording=...,dumponexit=true`), read with `jfr print --json`.

use std::{path::Path, process::Command};

/// One execution sample: when (Unix seconds), the thread, and its Java frames innermost first,
/// each `Class.method` (the class with dots).
pub struct JfrSample {
    pub time: f64,
    pub thread: String,
    pub frames: Vec<String>,
    /// Each frame's source line, when JFR has it.
    pub lines: Vec<Option<u64>>,
}

/// The `jdk.ExecutionSample` events of the recording at `file` (as the tool sees it), read by
/// `tool`, the `jfr` of the JDK that wrote it.
pub fn execution_samples(tool: Command, file: &Path) -> Vec<JfrSample> {
    events(tool, file, "jdk.ExecutionSample")
        .iter()
        .map(|e| {
            let v = &e["values"];
            let frames = v["stackTrace"]["frames"].as_array().map(Vec::as_slice).unwrap_or_default();
            let frames = frames
                .iter()
                .map(|f| {
                    let class = f["method"]["type"]["name"].as_str().unwrap_or("?").replace('/', ".");
                    format!("{class}.{}", f["method"]["name"].as_str().unwrap_or("?"))
                })
                .collect();
            let lines = v["stackTrace"]["frames"]
                .as_array()
                .map(|fs| fs.iter().map(|f| f["lineNumber"].as_u64().filter(|&l| l > 0)).collect())
                .unwrap_or_default();
            JfrSample {
                time: iso_seconds(v["startTime"].as_str().expect("a start time")),
                thread: v["sampledThread"]["javaName"].as_str().unwrap_or_default().to_string(),
                frames,
                lines,
            }
        })
        .collect()
}

/// The events named `name` of the recording at `file`, as `jfr print --json` gives them.
fn events(mut tool: Command, file: &Path, name: &str) -> Vec<serde_json::Value> {
    let out = tool
        .args(["print", "--json", "--events", name])
        .arg(file)
        .output()
        .expect("jfr (the JDK's; setup installs it)");
    assert!(out.status.success(), "jfr print failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("jfr's JSON");
    match json["recording"]["events"].take() {
        serde_json::Value::Array(events) => events,
        other => panic!("no events in jfr's JSON: {other}"),
    }
}

/// Unix seconds of an ISO 8601 UTC time as JFR prints it (`2026-12-06T22:58:14.750335410Z`).
fn iso_seconds(text: &str) -> f64 {
    let number = |range: std::ops::Range<usize>| text[range].parse::<i64>().expect("a date field");
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let (hour, minute) = (number(11..13), number(14..16));
    let second: f64 = text[17..].trim_end_matches('Z').parse().expect("seconds");
    // Days from 1970-01-01 to the date, by the proleptic Gregorian calendar.
    let (y, m) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    (days * 86_400 + hour * 3600 + minute * 60) as f64 + second
}

/// One `jdk.JavaMonitorEnter` event: a thread that entered a contended monitor, when it began
/// (Unix seconds), how long it took, and which thread held the monitor before it.
pub struct MonitorEnter {
    pub start: f64,
    pub seconds: f64,
    pub thread: String,
    pub previous_owner: String,
}

/// The `jdk.JavaMonitorEnter` events of the recording at `file`, read by `tool`.
pub fn monitor_enters(tool: Command, file: &Path) -> Vec<MonitorEnter> {
    events(tool, file, "jdk.JavaMonitorEnter")
        .iter()
        .map(|e| {
            let v = &e["values"];
            MonitorEnter {
                start: iso_seconds(v["startTime"].as_str().expect("a start time")),
                seconds: duration_seconds(v["duration"].as_str().unwrap_or("PT0S")),
                thread: v["eventThread"]["javaName"].as_str().unwrap_or_default().to_string(),
                previous_owner: v["previousOwner"]["javaName"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

/// Seconds of an ISO 8601 duration as JFR prints it (`PT0.020466931S`, `PT1M2.5S`).
fn duration_seconds(text: &str) -> f64 {
    let rest = text.strip_prefix("PT").unwrap_or(text);
    let (minutes, rest) = match rest.split_once('M') {
        Some((m, r)) => (m.parse::<f64>().unwrap_or(0.0), r),
        None => (0.0, rest),
    };
    minutes * 60.0 + rest.trim_end_matches('S').parse::<f64>().unwrap_or(0.0)
}
