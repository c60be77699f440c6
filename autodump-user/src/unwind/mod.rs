//! Unwinding without frame pointers: the agent's side. `rows` compiles a file's CFI into the
//! probes' rows; `tables` keeps them in the kernel, once per file, with each target's mappings.

pub mod rows;
pub mod tables;

/// Row capacity of the kernel's unwind table unless `--unwind-table-rows` says otherwise:
/// 16 bytes a row, so 64 MiB; a 50-library process needs about a tenth of it.
pub const DEFAULT_TABLE_ROWS: u32 = 4 << 20;

/// How user stacks are walked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnwindMode {
    /// With the files' CFI (`.eh_frame`), by frame pointer where none covers the code; needs
    /// `bpf_loop` (Linux 5.17+), else frame pointers.
    #[default]
    Cfi,
    /// By frame pointer only, walked by the kernel.
    FramePointers,
}
