//! Unwinding without frame pointers: the agent's side. `rows` compiles a file's CFI into the
//! probes' rows; `tables` keeps them in the kernel, once per file, with each target's mappings
//! (`slots`: their tables in the kernel).

pub mod code_rows;
pub mod row_store;
pub mod rows;
pub mod runtime_tables;
pub mod slots;
pub mod tables;
pub mod walk;

/// Row capacity of the kernel's unwind table unless `--unwind-table-rows` says otherwise:
/// 16 bytes a row, so 64 MiB; a 50-library process needs about a tenth of it.
pub const DEFAULT_TABLE_ROWS: u32 = 4 << 20;
