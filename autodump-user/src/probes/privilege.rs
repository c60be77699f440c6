//! Checks, before touching BPF, that the agent holds the privileges the probes need, so the
//! operator gets one clear line instead of a verifier error.

use crate::error::{AgentError, ExitCode};

/// Capabilities the agent needs when it does not run as root.
pub const NEEDED: &str = "CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE (or CAP_SYS_ADMIN)";

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability set of this process, from /proc/self/status.
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status").ok().and_then(|s| parse_cap_eff(&s)).unwrap_or(0)
}

pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// True if `caps` is enough to load and attach the probes and read the target's memory maps.
pub fn sufficient(caps: u64) -> bool {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON) && has(CAP_SYS_PTRACE))
}

/// The needed capabilities that `caps` lacks, by name (none when CAP_SYS_ADMIN covers them).
pub fn missing(caps: u64) -> Vec<&'static str> {
    if sufficient(caps) {
        return Vec::new();
    }
    [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"), (CAP_SYS_PTRACE, "CAP_SYS_PTRACE")]
        .into_iter()
        .filter(|&(cap, _)| caps & (1u64 << cap) == 0)
        .map(|(_, name)| name)
        .collect()
}

pub fn check() -> Result<(), AgentError> {
    let missing = missing(effective_caps());
    if missing.is_empty() {
        return Ok(());
    }
    let message = format!("missing {}: run as root (sudo) or grant {NEEDED}", missing.join(", "));
    Err(AgentError::new(ExitCode::Permission, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn decides_sufficiency() {
        assert!(sufficient(0x1ff_ffff_ffff));
        assert!(sufficient(1 << CAP_SYS_ADMIN));
        assert!(sufficient((1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_SYS_PTRACE)));
        assert!(!sufficient((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!sufficient(0));
    }

    #[test]
    fn names_what_is_missing() {
        assert_eq!(missing((1 << CAP_BPF) | (1 << CAP_PERFMON)), ["CAP_SYS_PTRACE"]);
        assert_eq!(missing(0), ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"]);
        assert!(missing(1 << CAP_SYS_ADMIN).is_empty());
    }
}
