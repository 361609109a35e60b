//! `virtio-lm net-echo`: the peer of the virtio-net device's UDP tunnel for tests and the demo.
//! It echoes every datagram (one Ethernet frame each) back to the address that last sent one,
//! so after a migration it follows the device to its new tunnel address from the device's
//! first frame (its announcement). The echo loop is the devices crate's
//! [`virtio_lm_devices::net::echo::run_echo`].

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use virtio_lm_devices::net::echo::{run_echo, EchoStats};

/// `--help` text of the subcommand.
pub const LONG_ABOUT: &str = "\
UDP echo peer for the virtio-net datagram tunnel.

Binds --listen and sends every datagram it receives back to the address that last sent one.
Each datagram is one Ethernet frame, as the virtio-net device's tunnel sends them (like QEMU's
dgram netdev). When the device moves to another host and announces itself, the echo follows it
from its first frame.

Prints the bound address first (`net-echo: listening on ADDR`, useful with port 0), one line
per sender address it learns, and a summary when it stops: after --seconds, or never.";

/// Arguments of `net-echo`.
#[derive(Debug, Args)]
pub struct NetEchoArgs {
    /// UDP address to listen on, e.g. 127.0.0.1:5555 (port 0: any free port, printed).
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Stop after this many seconds (default: run until killed).
    #[arg(long, value_name = "N")]
    pub seconds: Option<u64>,
}

/// Runs the echo until `--seconds` pass (or forever).
pub fn run(args: &NetEchoArgs) -> anyhow::Result<()> {
    let socket =
        UdpSocket::bind(args.listen).with_context(|| format!("cannot bind {}", args.listen))?;
    let addr = socket.local_addr().context("bound address")?;
    println!("net-echo: listening on {addr}");
    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let stats = EchoStats::default();
    let stop = AtomicBool::new(false);
    run_echo(&socket, &stats, &stop, deadline, |peer| {
        println!("net-echo: peer is now {peer}");
    })
    .context("echo loop")?;
    println!(
        "net-echo: {} datagrams echoed ({} bytes), {} send errors, {} peer changes",
        stats.datagrams(),
        stats.bytes(),
        stats.send_errors(),
        stats.peer_changes()
    );
    Ok(())
}
