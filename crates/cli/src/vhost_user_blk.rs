//! `virtio-lm vhost-user-blk`: serves an image as a vhost-user-blk device to a frontend such as
//! QEMU (`-chardev socket,path=SOCK -device vhost-user-blk-pci,chardev=…`), with our blk device
//! model, split and packed rings, and live migration (vring base, dirty log). See the
//! [`virtio_lm_vhost_user`] crate.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use virtio_lm_devices::blk::BlkOptions;
use virtio_lm_vhost_user::{bind, serve_connection, BackendOptions, ConfigProfile};

/// `--help` text of the subcommand.
pub const LONG_ABOUT: &str = "\
vhost-user-blk backend: serves --image to one vhost-user frontend at a time over --socket.

Offers VERSION_1, INDIRECT_DESC, EVENT_IDX, RING_PACKED, LOG_ALL and the blk features (RO with
--readonly); protocol features MQ, CONFIG, REPLY_ACK and LOG_SHMFD, so QEMU can live-migrate a
guest using it. --config-profile qemu-storage-daemon advertises qemu-storage-daemon's
configuration limits instead of ours, for guests that migrate between the two. Prints `vhost-user-blk: listening on PATH` once the socket accepts connections,
and one line per connection that ends. Runs until killed.";

/// `--config-profile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// The device model's own limits.
    Own,
    /// qemu-storage-daemon 10.0's limits.
    QemuStorageDaemon,
}

/// Arguments of `vhost-user-blk`.
#[derive(Debug, Args)]
pub struct VhostUserBlkArgs {
    /// Unix socket path to listen on (replaced if it exists).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,

    /// The disk image (a file or block device).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,

    /// Open the image read-only and offer VIRTIO_BLK_F_RO.
    #[arg(long)]
    pub readonly: bool,

    /// Number of request queues (1..=64).
    #[arg(long, value_name = "N", default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=64))]
    pub num_queues: u16,

    /// Maximum size of each queue (2..=32768).
    #[arg(long, value_name = "N", default_value_t = 256,
        value_parser = clap::value_parser!(u16).range(2..=32768))]
    pub queue_size: u16,

    /// Threads doing the image I/O (1..=16).
    #[arg(long, value_name = "N", default_value_t = 2,
        value_parser = clap::value_parser!(u16).range(1..=16))]
    pub io_threads: u16,

    /// Configuration values to advertise: `own` (the device model's) or `qemu-storage-daemon`
    /// (its seg_max, size_max, discard and write-zeroes limits and writeback 0, so a guest
    /// can live-migrate between the two backends with unchanged limits).
    #[arg(long, value_enum, default_value_t = Profile::Own)]
    pub config_profile: Profile,

    /// Test-only: never write the dirty log during a migration (shows the migration tests
    /// catch a backend that does not log). Never use it for real.
    #[arg(long, hide = true)]
    pub test_drop_dirty_log: bool,
}

/// Serves connections until the process is killed.
pub fn run(args: &VhostUserBlkArgs) -> anyhow::Result<()> {
    let mut blk = BlkOptions::new(&args.image);
    blk.read_only = args.readonly;
    blk.num_queues = args.num_queues;
    blk.queue_size = args.queue_size;
    blk.backend_threads = usize::from(args.io_threads);
    let options = BackendOptions {
        blk,
        config: match args.config_profile {
            Profile::Own => ConfigProfile::Own,
            Profile::QemuStorageDaemon => ConfigProfile::QemuStorageDaemon,
        },
        drop_dirty_log: args.test_drop_dirty_log,
    };
    // Open once before listening, so a bad image or option fails at start.
    drop(virtio_lm_devices::blk::Blk::open(options.blk.clone()).context("cannot serve the image")?);
    let mut listener = bind(&args.socket)
        .with_context(|| format!("cannot listen on {}", args.socket.display()))?;
    println!("vhost-user-blk: listening on {}", args.socket.display());
    loop {
        let end = serve_connection(&mut listener, &options).context("serving a connection")?;
        eprintln!("vhost-user-blk: connection ended: {}", end.reason);
        if let Some(e) = end.ring_error {
            eprintln!("vhost-user-blk: a ring failed during it: {e}");
        }
    }
}
