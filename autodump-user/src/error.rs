//! The agent's failure classes and the exit code each one maps to (documented in README).

/// Exit codes, one per class of failure, so scripts can tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    /// A bug or an unexpected system error.
    Internal = 1,
    /// Invalid command line (clap uses 2 as well).
    Usage = 2,
    /// The target process does not exist or is not visible.
    NoSuchProcess = 3,
    /// Not root and missing a capability the probes need.
    Permission = 4,
    /// The kernel lacks what the probes need (BTF, BPF, perf events).
    KernelUnsupported = 5,
    /// The output directory cannot be created or written.
    Output = 6,
}

/// An error that says which [`ExitCode`] it ends the agent with.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub code: ExitCode,
    pub message: String,
}

impl AgentError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// An unexpected failure (exit code 1), with what went wrong.
pub fn internal(e: impl std::fmt::Display) -> AgentError {
    AgentError::new(ExitCode::Internal, e.to_string())
}
