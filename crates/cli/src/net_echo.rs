//! `virtio-lm net-echo`: the peer of the virtio-net device's UDP tunnel for tests and the demo.
//! It echoes every datagram (one Ethernet frame each) back to the address that last sent one,
//! so after a migration it follows the device to its new tunnel address from the device's
//! first frame (its announcement). The echo loop is the devices crate's
//! [`virtio_lm_devices::net::echo::run_echo`].

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs as _, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use virtio_lm_devices::net::echo::{run_echo, EchoStats};
use vmm_sys_util::signal::register_signal_handler;

/// Largest `--seconds`: a year (a longer run is "until killed").
pub const MAX_SECONDS: u64 = 365 * 24 * 60 * 60;

/// Set by SIGINT or SIGTERM: the echo loop ends and the summary is printed.
static STOP: AtomicBool = AtomicBool::new(false);

/// `--help` text of the subcommand.
pub const LONG_ABOUT: &str = "\
UDP echo peer for the virtio-net datagram tunnel.

Binds --listen and sends every datagram it receives back to the address that last sent one.
Each datagram is one Ethernet frame, as the virtio-net device's tunnel sends them (like QEMU's
dgram netdev). When the device moves to another host and announces itself, the echo follows it
from its first frame.

Prints the bound address first (`net-echo: listening on ADDR`, useful with port 0), one line
per sender address it learns, and a summary when it stops: after --seconds, or on SIGINT
(Ctrl-C) or SIGTERM.";

/// Arguments of `net-echo`.
#[derive(Debug, Args)]
pub struct NetEchoArgs {
    /// UDP address to listen on, e.g. 127.0.0.1:5555 or localhost:5555 (port 0: any free port,
    /// printed). A host name is resolved; its first IPv4 address is used if it has one.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Stop after this many seconds, 0 to 31536000 (default: until SIGINT or SIGTERM).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=MAX_SECONDS))]
    pub seconds: Option<u64>,
}

/// `--listen`: a socket address, or a host name and port to resolve.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not HOST:PORT that resolves: {e}"))?
        .collect();
    // IPv4 first: `localhost` may list ::1 first on hosts without IPv6 loopback.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// The SIGINT and SIGTERM handler: only an atomic store, which is async-signal-safe.
extern "C" fn on_signal(
    _signal: libc::c_int,
    _info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    STOP.store(true, Ordering::Relaxed);
}

/// A line on standard output; a closed output (e.g. a pipe to `head`) does not stop the echo.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line).and_then(|()| out.flush());
}

/// Runs the echo until `--seconds` pass or SIGINT or SIGTERM arrives.
pub fn run(args: &NetEchoArgs) -> anyhow::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        register_signal_handler(signal, on_signal)
            .with_context(|| format!("cannot handle signal {signal}"))?;
    }
    let socket =
        UdpSocket::bind(args.listen).with_context(|| format!("cannot bind {}", args.listen))?;
    let addr = socket.local_addr().context("bound address")?;
    say(format_args!("net-echo: listening on {addr}\n"));
    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    let stats = EchoStats::default();
    run_echo(&socket, &stats, &STOP, deadline, |peer| {
        say(format_args!("net-echo: peer is now {peer}\n"));
    })
    .context("echo loop")?;
    say(format_args!(
        "net-echo: {} datagrams echoed ({} bytes), {} send errors, {} peer changes\n",
        stats.datagrams(),
        stats.bytes(),
        stats.send_errors(),
        stats.peer_changes()
    ));
    Ok(())
}
