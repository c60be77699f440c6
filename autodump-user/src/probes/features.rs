//! What the running kernel offers the probes, decided from its BTF before anything is loaded,
//! never assumed from a version number. Each decision picks one of the ways the probes know to
//! reach the same result, and is named in the log and in every summary.
//!
//! | decision | kernels | otherwise |
//! |---|---|---|
//! | `sched_switch` passes `prev_state` | 5.18+ | read the task's state field (`__state` 5.14+, `state` before) |
//! | `sched_process_exit` passes `group_dead` | newer than 6.12 | the thread group is dead when `task->signal->live` is 0 |
//! | helper `bpf_loop` | 5.17+ | user stacks by frame pointer only (see `unwind`) |

use serde::Serialize;

use super::btf::{Btf, BtfError};

/// Where `sched_switch` finds the state of the thread switching out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchState {
    /// The tracepoint's fourth argument, `prev_state` (5.18+).
    Argument,
    /// The task's `__state` (5.14+) or `state` field, at `TaskOffsets::state`.
    TaskField,
}

/// How `sched_process_exit` tells that the exiting thread is the target's last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupEnd {
    /// The tracepoint's second argument, `group_dead`.
    Argument,
    /// `task->signal->live`, which `do_exit` has already counted down when the tracepoint runs.
    SignalLive,
}

/// Byte offsets of the kernel fields the probes read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TaskOffsets {
    pub pid: u32,
    pub tgid: u32,
    pub exit_code: u32,
    /// `task_struct::__state`, or `state` before 5.14 (a long: its low half on x86_64).
    pub state: u32,
    pub signal: u32,
    /// `signal_struct::live`.
    pub signal_live: u32,
    /// `task_struct::thread.fsbase`: the user thread pointer, saved for the task (x86_64); 0
    /// where the kernel has no such field (runtimes that read thread-local state then cannot).
    pub tls_base: u32,
    /// `task_struct::stack`: the task's kernel stack (a probe not on it runs in an interrupt).
    pub stack: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelFeatures {
    pub switch_state: SwitchState,
    pub group_end: GroupEnd,
    /// The `bpf_loop` helper (5.17+).
    pub bpf_loop: bool,
    #[serde(skip)]
    pub offsets: TaskOffsets,
}

impl KernelFeatures {
    /// Decides every feature from the kernel's BTF. Fails only where no way is known.
    pub fn decide(btf: &Btf) -> Result<Self, BtfError> {
        let state_field = if btf.field_offset("task_struct", "__state").is_ok() { "__state" } else { "state" };
        let offsets = TaskOffsets {
            pid: btf.field_offset("task_struct", "pid")?,
            tgid: btf.field_offset("task_struct", "tgid")?,
            exit_code: btf.field_offset("task_struct", "exit_code")?,
            state: btf.field_offset("task_struct", state_field)?,
            signal: btf.field_offset("task_struct", "signal")?,
            signal_live: btf.field_offset("signal_struct", "live")?,
            tls_base: btf
                .field_offset("task_struct", "thread")
                .and_then(|thread| Ok(thread + btf.field_offset("thread_struct", "fsbase")?))
                .unwrap_or(0),
            stack: btf.field_offset("task_struct", "stack")?,
        };
        let switch_state = match btf.tracepoint_args("sched_switch")? {
            Some(n) if n >= 4 => SwitchState::Argument,
            Some(3) => SwitchState::TaskField,
            _ => return Err(BtfError::Unsupported("sched_switch has neither 3 nor 4 arguments")),
        };
        let group_end = match btf.tracepoint_args("sched_process_exit")? {
            Some(n) if n >= 2 => GroupEnd::Argument,
            Some(1) => GroupEnd::SignalLive,
            _ => return Err(BtfError::Unsupported("sched_process_exit has no task argument")),
        };
        let bpf_loop = btf.enum_has("bpf_func_id", "BPF_FUNC_loop")?;
        Ok(Self { switch_state, group_end, bpf_loop, offsets })
    }

    /// One line for the log: what was decided.
    pub fn describe(&self) -> String {
        let state = match self.switch_state {
            SwitchState::Argument => "from sched_switch's prev_state",
            SwitchState::TaskField => "from the task's state field (no prev_state argument before 5.18)",
        };
        let end = match self.group_end {
            GroupEnd::Argument => "from sched_process_exit's group_dead",
            GroupEnd::SignalLive => "from signal->live (no group_dead argument)",
        };
        format!(
            "thread state {state}; target's end {end}; bpf_loop {}",
            if self.bpf_loop { "present" } else { "absent" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matrix kernels' BTF, taken out of their images by `cargo xtask setup`, with what each
    /// must decide (checked by hand against `bpftool btf dump ... format c`).
    const MATRIX: &[(&str, SwitchState, GroupEnd, bool, &str)] = &[
        ("bullseye", SwitchState::TaskField, GroupEnd::SignalLive, false, "state"),
        ("bookworm", SwitchState::Argument, GroupEnd::SignalLive, true, "__state"),
        ("trixie", SwitchState::Argument, GroupEnd::SignalLive, true, "__state"),
        ("sid", SwitchState::Argument, GroupEnd::Argument, true, "__state"),
    ];

    #[test]
    fn decisions_on_the_matrix_kernels() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vmtest/kernels");
        for &(suite, switch_state, group_end, bpf_loop, state_field) in MATRIX {
            let Ok(data) = std::fs::read(dir.join(suite).join("btf")) else {
                let why =
                    format!("no BTF of Debian {suite}'s kernel in {} (`cargo xtask setup` fetches it)", dir.display());
                crate::test_go::skip(&why);
                continue;
            };
            let btf = Btf::parse(&data).unwrap();
            let features = KernelFeatures::decide(&btf).unwrap();
            assert_eq!(features.switch_state, switch_state, "{suite}");
            assert_eq!(features.group_end, group_end, "{suite}");
            assert_eq!(features.bpf_loop, bpf_loop, "{suite}");
            assert_eq!(features.offsets.state, btf.field_offset("task_struct", state_field).unwrap(), "{suite}");
            assert_eq!(features.offsets.tgid, features.offsets.pid + 4, "{suite}");
        }
    }

    #[test]
    fn decisions_on_this_kernel() {
        let Ok(data) = std::fs::read(super::super::btf::VMLINUX_BTF) else { return };
        let features = KernelFeatures::decide(&Btf::parse(&data).unwrap()).unwrap();
        // This machine boots 6.18: every feature is there.
        eprintln!("{}", features.describe());
        assert_eq!(features.switch_state, SwitchState::Argument);
        assert!(features.bpf_loop);
        // A field inside an anonymous union (since 6.3) is found with its offset.
        let btf = Btf::parse(&data).unwrap();
        let (end, flags) =
            (btf.field_offset("vm_area_struct", "vm_end"), btf.field_offset("vm_area_struct", "vm_flags"));
        assert!(flags.unwrap() > end.unwrap());
    }
}
