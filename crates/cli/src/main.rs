//! The `virtio-lm` binary: parses the command line and runs the subcommand (see the
//! `virtio_lm_cli` library for the subcommands).

use std::process::ExitCode;

use clap::Parser;
use virtio_lm_cli::Cli;

fn main() -> ExitCode {
    match virtio_lm_cli::run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("virtio-lm: {e:#}");
            ExitCode::from(virtio_lm_cli::exit_code(&e))
        }
    }
}
