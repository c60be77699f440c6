//! CPython programs' flags.

#[derive(Clone, Debug, clap::Args)]
pub struct PythonArgs {
    /// Python programs: keep the interpreter's eval-loop C frames (`_PyEval_EvalFrameDefault`)
    /// between the Python frames they run; by default the Python frames stand in for them.
    #[arg(long)]
    pub python_eval_frames: bool,
}
