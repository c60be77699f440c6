//! The runtimes' flags: each runtime's own (its `args.rs`), gathered for the command line.

use super::{go::args::GoArgs, perfmap::args::PerfMapArgs, python::args::PythonArgs};

#[derive(Clone, Debug, clap::Args)]
pub struct RuntimeArgs {
    #[command(flatten)]
    pub go: GoArgs,
    #[command(flatten)]
    pub python: PythonArgs,
    #[command(flatten)]
    pub perfmap: PerfMapArgs,
}
