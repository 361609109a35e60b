//! `virtio-lm bench-vhost-user-blk`: a vhost-user frontend that loads any vhost-user-blk
//! backend (ours, qemu-storage-daemon) with random I/O and reports IOPS, latency percentiles
//! and the backend's CPU time per I/O. See [`virtio_lm_vhost_user::bench`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use virtio_lm_queue::RingKind;
use virtio_lm_vhost_user::bench::{self, BenchOptions, ReadWrite, MAX_BS, MAX_QD};

use crate::UsageError;

/// `--help` text of the subcommand.
pub const LONG_ABOUT: &str = "\
Load generator for vhost-user-blk backends: connects to --socket as a vhost-user frontend with
memfd guest RAM, negotiates the same features with every backend (VERSION_1, EVENT_IDX,
RING_PACKED with --ring packed; protocol REPLY_ACK and CONFIG), keeps --qd random reads or writes
of --bs bytes in flight on one ring for --seconds, and prints one `key=value` line per figure:
iops, lat_p50_us, lat_p99_us, lat_p999_us, and backend_cpu_s_per_mio (the backend process's
user+system CPU seconds per million I/Os; its pid comes from SO_PEERCRED or --backend-pid).
Offsets come from a fixed seed, so every backend sees the same sequence.";

/// `--rw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Rw {
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
}

/// `--ring`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ring {
    /// Split virtqueue.
    Split,
    /// Packed virtqueue (VIRTIO_F_RING_PACKED).
    Packed,
}

/// Arguments of `bench-vhost-user-blk`.
#[derive(Debug, Args)]
pub struct BenchVhostUserBlkArgs {
    /// The backend's vhost-user socket.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,

    /// Requests kept in flight.
    #[arg(long, value_name = "N", default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_QD)))]
    pub qd: u16,

    /// Bytes per request: a multiple of 512 up to 64k, with an optional k suffix (4k = 4096).
    #[arg(long, value_name = "SIZE", default_value = "4k", value_parser = parse_bs)]
    pub bs: u32,

    /// Random reads or random writes.
    #[arg(long, value_enum, default_value_t = Rw::Randread)]
    pub rw: Rw,

    /// How long to submit requests (1..=3600).
    #[arg(long, value_name = "S", default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,

    /// The ring format.
    #[arg(long, value_enum, default_value_t = Ring::Split)]
    pub ring: Ring,

    /// The backend's pid for its CPU time (default: the socket peer's, by SO_PEERCRED).
    #[arg(long, value_name = "PID")]
    pub backend_pid: Option<u32>,
}

/// Parses `--bs`: bytes, or KiB with a `k` suffix.
fn parse_bs(value: &str) -> Result<u32, String> {
    let (digits, unit) = match value.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1024),
        None => (value, 1),
    };
    let bs = digits
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("{value:?} is not a size"))?;
    if bs == 0 || bs > MAX_BS || bs % 512 != 0 {
        return Err(format!("{bs} is not a multiple of 512 up to {MAX_BS}"));
    }
    Ok(bs)
}

/// The load options of the arguments.
pub fn options(args: &BenchVhostUserBlkArgs) -> BenchOptions {
    BenchOptions {
        qd: args.qd,
        bs: args.bs,
        rw: match args.rw {
            Rw::Randread => ReadWrite::RandRead,
            Rw::Randwrite => ReadWrite::RandWrite,
        },
        duration: Duration::from_secs(args.seconds),
        max_ios: None,
        ring: match args.ring {
            Ring::Split => RingKind::Split,
            Ring::Packed => RingKind::Packed,
        },
        verify: false,
        backend_pid: args.backend_pid,
    }
}

/// Runs the load and prints the report.
pub fn run(args: &BenchVhostUserBlkArgs) -> anyhow::Result<()> {
    let options = options(args);
    options.check().map_err(UsageError)?;
    let report = bench::run(&args.socket, &options)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.socket.display()))?;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "bench-vhost-user-blk: {:?} bs={} qd={} ring={:?}: {} I/Os in {:.2} s",
        args.rw,
        args.bs,
        args.qd,
        args.ring,
        report.ios,
        report.elapsed.as_secs_f64()
    );
    println!("iops={:.0}", report.iops());
    println!("lat_p50_us={:.1}", us(report.latency[0]));
    println!("lat_p99_us={:.1}", us(report.latency[1]));
    println!("lat_p999_us={:.1}", us(report.latency[2]));
    match (report.backend_pid, report.cpu_seconds_per_million()) {
        (Some(pid), Some(cpu)) => {
            println!("backend_pid={pid}");
            println!("backend_cpu_s_per_mio={cpu:.2}");
        }
        _ => println!("backend_cpu_s_per_mio=unknown"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_parse_in_bytes_or_kib() {
        assert_eq!(parse_bs("4k"), Ok(4096));
        assert_eq!(parse_bs("512"), Ok(512));
        assert_eq!(parse_bs("64K"), Ok(65536));
        for bad in ["0", "4097", "128k", "k", "-1", "99999999999k"] {
            assert!(parse_bs(bad).is_err(), "{bad}");
        }
    }
}
