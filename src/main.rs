//! The `vfio-vmm` binary: the command line lives in `cli/`.

use std::process::ExitCode;

mod cli;
mod terminal;

fn main() -> ExitCode {
    cli::main()
}
