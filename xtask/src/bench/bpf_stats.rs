//! The kernel's own accounting of BPF programs (`kernel.bpf_stats_enabled`): run time and run
//! count per program, read with bpftool.

use std::{collections::HashMap, process::Command};

use anyhow::{Context, Result};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns the kernel's BPF statistics on or off for as long as it lives, then restores them.
pub struct StatsSwitch {
    previous: String,
}

impl StatsSwitch {
    pub fn set(on: bool) -> Result<Self> {
        let previous = std::fs::read_to_string(SYSCTL).with_context(|| format!("cannot read {SYSCTL}"))?;
        std::fs::write(SYSCTL, if on { "1" } else { "0" }).with_context(|| format!("cannot write {SYSCTL}"))?;
        Ok(Self { previous })
    }
}

impl Drop for StatsSwitch {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, self.previous.trim());
    }
}

/// One program's counters.
#[derive(Clone, Debug, Default)]
pub struct Program {
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// Every loaded program's counters, by program id.
pub fn snapshot() -> Result<HashMap<u64, Program>> {
    let out = Command::new("bpftool").args(["prog", "show", "--json"]).output().context("cannot run bpftool")?;
    let progs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).context("bpftool printed bad JSON")?;
    Ok(progs
        .iter()
        .filter_map(|p| {
            let num = |k: &str| p.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            let program = Program {
                name: p.get("name")?.as_str()?.to_string(),
                run_time_ns: num("run_time_ns"),
                run_cnt: num("run_cnt"),
            };
            Some((p.get("id")?.as_u64()?, program))
        })
        .collect())
}

/// Time and runs of the programs that were loaded after `loaded_before`, between `start` and
/// `end`, summed by name: the programs of the tool started in between.
pub fn delta(
    loaded_before: &HashMap<u64, Program>,
    start: &HashMap<u64, Program>,
    end: &HashMap<u64, Program>,
) -> HashMap<String, (u64, u64)> {
    let mut by_name: HashMap<String, (u64, u64)> = HashMap::new();
    for (id, after) in end.iter().filter(|(id, _)| !loaded_before.contains_key(id)) {
        let before = start.get(id).cloned().unwrap_or_default();
        let slot = by_name.entry(after.name.clone()).or_default();
        slot.0 += after.run_time_ns - before.run_time_ns;
        slot.1 += after.run_cnt - before.run_cnt;
    }
    by_name
}
