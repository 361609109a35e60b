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
            // Wrong arguments exit 2, as clap's own parse errors do.
            if e.is::<virtio_lm_cli::UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
