//! The tunnel's peer for tests and the demo (`virtio-lm net-echo`): a UDP socket that sends
//! every datagram back to whatever address last sent one — so when a device moves to another
//! host (another tunnel address), the echo follows it from the device's first frame on.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use virtio_lm_device::{counter_getters, Counter, StoppableThread};

/// How often the echo loop looks at its stop flag and deadline (its receive timeout).
const TICK: Duration = Duration::from_millis(20);

/// Largest datagram echoed whole (UDP's maximum payload).
const MAX_DATAGRAM: usize = 65_507;

/// Bytes of the first datagram from a new peer kept in [`Learned::first`].
const LEARNED_BYTES: usize = 64;

/// Most peer changes [`EchoStats::learned`] remembers.
const LEARNED_MAX: usize = 64;

/// A sender address the echo learned, and how it learned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    /// The new sender address.
    pub addr: SocketAddr,
    /// The first bytes (up to 64) of the datagram that came from it first.
    pub first: Vec<u8>,
}

/// What an echo peer has done so far.
#[derive(Debug, Default)]
pub struct EchoStats {
    datagrams: Counter,
    bytes: Counter,
    send_errors: Counter,
    peer_changes: Counter,
    peer: Mutex<Option<SocketAddr>>,
    learned: Mutex<Vec<Learned>>,
}

impl EchoStats {
    counter_getters! {
        /// Datagrams echoed.
        datagrams,
        /// Bytes echoed.
        bytes,
        /// Datagrams that could not be sent back.
        send_errors,
        /// How many times the sender address changed (the first sender counts).
        peer_changes,
    }

    /// The address echoes go to now.
    pub fn peer(&self) -> Option<SocketAddr> {
        *self.peer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sender addresses learned, oldest first (the first 64 changes).
    pub fn learned(&self) -> Vec<Learned> {
        self.learned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Runs the echo loop on `socket` until `stop` is set or `deadline` passes, calling `on_peer`
/// whenever the sender address changes. The socket gets a short receive timeout.
pub fn run_echo(
    socket: &UdpSocket,
    stats: &EchoStats,
    stop: &AtomicBool,
    deadline: Option<Instant>,
    mut on_peer: impl FnMut(SocketAddr),
) -> io::Result<()> {
    socket.set_read_timeout(Some(TICK))?;
    socket.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            // ICMP errors of earlier sends (a peer that went away) and the like.
            Err(_) => continue,
        };
        let changed = {
            let mut peer = stats.peer.lock().unwrap_or_else(PoisonError::into_inner);
            let changed = *peer != Some(from);
            *peer = Some(from);
            changed
        };
        if changed {
            stats.peer_changes.increment();
            let mut learned = stats.learned.lock().unwrap_or_else(PoisonError::into_inner);
            if learned.len() < LEARNED_MAX {
                learned.push(Learned {
                    addr: from,
                    first: buf[..n.min(LEARNED_BYTES)].to_vec(),
                });
            }
            drop(learned);
            on_peer(from);
        }
        match socket.send_to(&buf[..n], from) {
            Ok(_) => {
                stats.datagrams.increment();
                stats.bytes.add(n as u64);
            }
            Err(_) => {
                stats.send_errors.increment();
            }
        }
    }
    Ok(())
}

/// An echo peer on its own thread; dropping it stops the thread.
pub struct EchoPeer {
    addr: SocketAddr,
    stats: Arc<EchoStats>,
    /// The echo loop; stopped and joined when the peer is dropped.
    _thread: StoppableThread,
}

impl EchoPeer {
    /// Binds `listen` (port 0: any free port) and starts echoing.
    pub fn spawn(listen: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(listen)?;
        let addr = socket.local_addr()?;
        let stats = Arc::new(EchoStats::default());
        let thread = {
            let stats = stats.clone();
            StoppableThread::with_flag("net-echo", move |stop| {
                let _ = run_echo(&socket, &stats, stop, None, |_| {});
            })?
        };
        Ok(Self {
            addr,
            stats,
            _thread: thread,
        })
    }

    /// The bound address (the tunnel's remote address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The peer's counters.
    pub fn stats(&self) -> &Arc<EchoStats> {
        &self.stats
    }
}
