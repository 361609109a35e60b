//! The `virtio-lm` command: host-side tools of the virtio live-migration reference
//! implementation, as a library so its subcommands can be tested and reused.
//!
//! Subcommands: `net-echo`, the UDP peer of the virtio-net device's datagram tunnel (see
//! [`net_echo`]), `inspect`, which decodes a device context from a file or standard input,
//! or builds one from a real blk or net device with `--sample` (see [`inspect`]), and the live
//! migration commands: `vm` ([`vm`], steered through a [`control`] socket), `migrate`
//! ([`migrate`]) and `demo` ([`demo`]). The command line is a [`clap`] derive tree: [`Cli`]
//! holds the global options and one [`Command`]; each subcommand is a variant with its own
//! argument struct and module, dispatched by [`run`]. Also: `conform` ([`conform`], the
//! normative checks live against an in-process device) and `vhost-user-blk`
//! ([`vhost_user_blk`], our blk device served to QEMU over vhost-user) with its load generator
//! `bench-vhost-user-blk` ([`bench_vhost_user_blk`]).
//!
//! Exit status: 0 on success, 2 for a usage error (clap's own, or a [`UsageError`]), 1 for any
//! other error ([`exit_code`]); the message names the problem.
//!
//! ```
//! use clap::Parser;
//! use virtio_lm_cli::{Cli, Command};
//!
//! let cli = Cli::try_parse_from(["virtio-lm", "net-echo", "--listen", "127.0.0.1:0", "--seconds", "1"]).unwrap();
//! let Command::NetEcho(args) = &cli.command else { panic!("net-echo") };
//! assert_eq!(args.seconds, Some(1));
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod args;
pub mod bench_vhost_user_blk;
pub mod conform;
pub mod control;
pub mod demo;
pub mod inspect;
pub mod migrate;
pub mod net_echo;
pub mod stress;
pub mod summary;
pub mod timeline;
pub mod tls;
pub mod vhost_user_blk;
pub mod vm;

use clap::{Parser, Subcommand};

pub use bench_vhost_user_blk::BenchVhostUserBlkArgs;
pub use demo::DemoArgs;
pub use inspect::InspectArgs;
pub use migrate::MigrateArgs;
pub use net_echo::NetEchoArgs;
pub use vhost_user_blk::VhostUserBlkArgs;
pub use vm::VmArgs;

/// Live migration for virtio devices (reference implementation): host-side tools.
#[derive(Debug, Parser)]
#[command(name = "virtio-lm", version)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the whole live-migration story on loopback and reports: an echo peer, a
    /// destination and a source VM as child processes, workloads, migration, verification.
    #[command(long_about = demo::LONG_ABOUT)]
    Demo(DemoArgs),
    /// Runs a simulated VM steered through a control socket (a migration source, or with
    /// --incoming a destination).
    #[command(long_about = vm::LONG_ABOUT)]
    Vm(VmArgs),
    /// Migrates a running VM (through its control socket) to a destination VM.
    #[command(long_about = migrate::LONG_ABOUT)]
    Migrate(MigrateArgs),
    /// UDP echo peer for the virtio-net datagram tunnel: sends every datagram back to
    /// whatever address last sent one.
    #[command(long_about = net_echo::LONG_ABOUT)]
    NetEcho(NetEchoArgs),
    /// Decodes a device context (as read with DEV_CTX_READ) into a readable listing or JSON;
    /// malformed input fails with the byte offset of the problem.
    Inspect(InspectArgs),
    /// vhost-user-blk backend: serves an image to QEMU (or any vhost-user frontend), live
    /// migration included.
    #[command(long_about = vhost_user_blk::LONG_ABOUT)]
    VhostUserBlk(VhostUserBlkArgs),
    /// Load generator for vhost-user-blk backends (ours or qemu-storage-daemon): IOPS,
    /// latency percentiles and the backend's CPU time per I/O.
    #[command(long_about = bench_vhost_user_blk::LONG_ABOUT)]
    BenchVhostUserBlk(BenchVhostUserBlkArgs),
    /// Runs the normative checks live against an in-process device and prints one row per statement.
    Conform(conform::ConformArgs),
}

/// A path in the temp dir no other run or call of this process uses: `name`, the pid and a
/// sequence number.
pub(crate) fn unique_temp_path(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("{name}-{}-{n}", std::process::id()))
}

/// A command line that parsed but does not make sense (e.g. an option that needs another one):
/// exits 2 like clap's own usage errors; every other error exits 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The process exit status for an error [`run`] returned: 2 for a [`UsageError`], 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.is::<UsageError>() {
        2
    } else {
        1
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Vm(args) => vm::run(&args),
        Command::Migrate(args) => migrate::run(&args),
        Command::NetEcho(args) => net_echo::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::VhostUserBlk(args) => vhost_user_blk::run(&args),
        Command::BenchVhostUserBlk(args) => bench_vhost_user_blk::run(&args),
        Command::Conform(args) => conform::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn net_echo_needs_a_listen_address() {
        assert!(Cli::try_parse_from(["virtio-lm", "net-echo"]).is_err());
        assert!(Cli::try_parse_from(["virtio-lm", "net-echo", "--listen", "nowhere"]).is_err());
        let cli =
            Cli::try_parse_from(["virtio-lm", "net-echo", "--listen", "127.0.0.1:9"]).unwrap();
        let Command::NetEcho(args) = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(args.listen.port(), 9);
        assert_eq!(args.seconds, None);
    }

    #[test]
    fn vhost_user_blk_needs_a_socket_and_an_image() {
        assert!(Cli::try_parse_from(["virtio-lm", "vhost-user-blk", "--socket", "s"]).is_err());
        assert!(Cli::try_parse_from(["virtio-lm", "vhost-user-blk", "--image", "i"]).is_err());
        let cli = Cli::try_parse_from([
            "virtio-lm",
            "vhost-user-blk",
            "--socket",
            "/tmp/s.sock",
            "--image",
            "disk.img",
            "--readonly",
            "--num-queues",
            "2",
        ])
        .unwrap();
        let Command::VhostUserBlk(args) = cli.command else {
            panic!("parsed as another command")
        };
        assert!(args.readonly && !args.test_drop_dirty_log);
        assert_eq!((args.num_queues, args.queue_size), (2, 256));
    }
}
