//! Load and attach failures, told apart honestly: a rejection by the kernel (the verifier, a
//! missing attach point) is "kernel unsupported" and names the probe, with the verifier's last
//! lines in the log; only the privilege check can make it a privilege problem. Root gets
//! EACCES from a verifier that rejects a program, so an errno alone proves nothing.

use aya::programs::ProgramError;

use super::privilege;
use crate::error::{AgentError, ExitCode};

/// How many of the verifier's last lines go to the log.
const VERIFIER_LINES: usize = 20;

pub fn classify(what: &str, error: &(dyn std::error::Error + 'static)) -> AgentError {
    classify_with_caps(what, error, privilege::effective_caps())
}

/// As [`classify`], for an agent holding the capability set `caps`.
fn classify_with_caps(what: &str, error: &(dyn std::error::Error + 'static), caps: u64) -> AgentError {
    if let Some(log) = verifier_log(error) {
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = &lines[lines.len().saturating_sub(VERIFIER_LINES)..];
        tracing::warn!("the kernel's verifier rejected the program ({what}); its last lines:\n{}", tail.join("\n"));
    }
    let denied = errno(error).is_some_and(|e| matches!(e, libc::EPERM | libc::EACCES));
    let missing = privilege::missing(caps);
    if denied && !missing.is_empty() {
        return AgentError::new(
            ExitCode::Permission,
            format!(
                "cannot {what}: permission denied; missing {}: run as root or grant {}",
                missing.join(", "),
                privilege::NEEDED
            ),
        );
    }
    let detail = error.to_string();
    let detail = detail.lines().next().unwrap_or_default();
    let hint = if verifier_log(error).is_some() {
        "; the kernel rejected it (the verifier's last lines are in the log)"
    } else {
        ""
    };
    AgentError::new(ExitCode::KernelUnsupported, format!("cannot {what}: {detail}{hint}"))
}

/// The verifier's log, when the error is a program the kernel refused to load.
fn verifier_log(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(ProgramError::LoadError { verifier_log, .. }) = e.downcast_ref::<ProgramError>() {
            return Some(format!("{verifier_log:?}"));
        }
        source = e.source();
    }
    None
}

fn errno(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(code) = e.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) {
            return Some(code);
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(errno: i32) -> ProgramError {
        ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(errno),
            verifier_log: aya_obj::VerifierLog::new(
                "0: (79) r1 = *(u64 *)(r1 +24)\ninvalid bpf_context access off=24 size=8\n".into(),
            ),
        }
    }

    #[test]
    fn a_verifier_rejection_with_enough_privileges_is_kernel_unsupported() {
        // What 6.1 did to the probe that read sched_process_exit's missing second argument.
        let root = u64::MAX;
        for errno in [libc::EACCES, libc::EPERM, libc::EINVAL] {
            let e = classify_with_caps("load the sched_process_exit probe", &rejected(errno), root);
            assert_eq!(e.code, ExitCode::KernelUnsupported, "{}", e.message);
            assert!(e.message.contains("sched_process_exit") && e.message.contains("verifier"), "{}", e.message);
            assert!(!e.message.contains("permission denied"), "{}", e.message);
        }
    }

    #[test]
    fn a_denial_is_a_privilege_problem_only_when_capabilities_are_missing() {
        let e = classify_with_caps("load the on-CPU sampler", &rejected(libc::EPERM), 0);
        assert_eq!(e.code, ExitCode::Permission);
        assert!(e.message.contains("CAP_BPF"), "{}", e.message);
        let e = classify_with_caps("load the on-CPU sampler", &rejected(libc::EINVAL), 0);
        assert_eq!(e.code, ExitCode::KernelUnsupported, "not a denial: {}", e.message);
    }
}
