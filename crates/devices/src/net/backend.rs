//! The datagram tunnel: one UDP socket, one Ethernet frame per datagram (as QEMU's dgram
//! netdev). A receiver thread reads datagrams into a bounded channel and signals the wake
//! eventfd; the device sends frames itself, from the processing calls.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use virtio_lm_device::StoppableThread;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::config::{ETH_HLEN, MAX_FRAME_LEN};
use super::stats::NetStats;
use crate::blk::Gate;

/// How often the receiver thread looks at its stop flag (its receive timeout), and so the
/// retry tick while transmit frames are held.
const RECV_TICK: Duration = Duration::from_millis(20);

/// Longest a send may block when the socket's buffer is full (then the frame is held).
const SEND_TIMEOUT: Duration = Duration::from_millis(20);

/// Frames received and not yet taken by the device. When it is full the receiver thread
/// drops new frames (counted as "no receive buffer").
pub(crate) const RX_CHANNEL: usize = 256;

/// What became of a frame handed to [`Backend::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// On its way.
    Yes,
    /// The socket (or the fault-injection gate) cannot take it now: hold it and retry.
    Busy,
    /// Refused for good (counted); lost, as on a wire.
    Failed,
}

/// The tunnel.
pub(crate) struct Backend {
    socket: Arc<UdpSocket>,
    remote: SocketAddr,
    rx: Receiver<Vec<u8>>,
    wake: Arc<EventFd>,
    /// Frames are held for a busy socket: the receiver thread signals the wake eventfd every
    /// tick so the device retries.
    tx_blocked: Arc<AtomicBool>,
    gate: Option<Gate>,
    stats: Arc<NetStats>,
    receiver: StoppableThread,
}

impl Backend {
    /// Binds `local` and starts the receiver thread.
    pub(crate) fn start(
        local: SocketAddr,
        remote: SocketAddr,
        gate: Option<Gate>,
        stats: Arc<NetStats>,
    ) -> io::Result<Self> {
        let socket = UdpSocket::bind(local)?;
        socket.set_read_timeout(Some(RECV_TICK))?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        let socket = Arc::new(socket);
        let wake = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let tx_blocked = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel(RX_CHANNEL);
        let receiver = {
            let (socket, wake, blocked, stats) = (
                socket.clone(),
                wake.clone(),
                tx_blocked.clone(),
                stats.clone(),
            );
            StoppableThread::with_flag("virtio-net-rx", move |stop| {
                receive_loop(&socket, &tx, &wake, stop, &blocked, &stats)
            })?
        };
        Ok(Self {
            socket,
            remote,
            rx,
            wake,
            tx_blocked,
            gate,
            stats,
            receiver,
        })
    }

    /// The bound local address.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The socket, for announcements sent outside the processing calls.
    pub(crate) fn socket(&self) -> &Arc<UdpSocket> {
        &self.socket
    }

    /// The peer address.
    pub(crate) fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The eventfd signalled when frames arrive (and every tick while frames are held).
    pub(crate) fn wake(&self) -> &Arc<EventFd> {
        &self.wake
    }

    /// The next received frame, if any.
    pub(crate) fn try_recv(&self) -> Option<Vec<u8>> {
        self.rx.try_recv().ok()
    }

    /// Tells the receiver thread whether frames are held for a busy socket.
    pub(crate) fn set_tx_blocked(&self, blocked: bool) {
        self.tx_blocked.store(blocked, Ordering::Relaxed);
    }

    /// Sends one frame to the peer.
    pub(crate) fn send(&self, frame: &[u8]) -> Sent {
        if self.gate.as_ref().is_some_and(Gate::is_closed) {
            return Sent::Busy;
        }
        match send_frame(&self.socket, self.remote, frame) {
            Ok(()) => {
                self.stats.add_tx_frames(1);
                self.stats.add_tx_bytes(frame.len() as u64);
                Sent::Yes
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Sent::Busy
            }
            Err(_) => {
                self.stats.add_tx_errors(1);
                Sent::Failed
            }
        }
    }
}

/// Sends `frame` as one datagram.
pub(crate) fn send_frame(socket: &UdpSocket, remote: SocketAddr, frame: &[u8]) -> io::Result<()> {
    let n = socket.send_to(frame, remote)?;
    if n == frame.len() {
        Ok(())
    } else {
        Err(io::Error::other("datagram truncated"))
    }
}

impl Backend {
    /// Stops the receiver thread (idempotent); frames it queued stay readable.
    pub(crate) fn shutdown(&mut self) {
        self.receiver.stop();
    }
}

fn receive_loop(
    socket: &UdpSocket,
    tx: &SyncSender<Vec<u8>>,
    wake: &EventFd,
    stop: &AtomicBool,
    tx_blocked: &AtomicBool,
    stats: &NetStats,
) {
    // One byte more than the largest frame, so an oversized datagram is recognised.
    let mut buf = vec![0u8; MAX_FRAME_LEN + 1];
    while !stop.load(Ordering::Relaxed) {
        let n = match socket.recv_from(&mut buf) {
            Ok((n, _from)) => n,
            Err(_) => {
                // Timeout (the tick) or a transient error.
                if tx_blocked.load(Ordering::Relaxed) {
                    let _ = wake.write(1);
                }
                continue;
            }
        };
        stats.add_rx_datagrams(1);
        if !(ETH_HLEN..=MAX_FRAME_LEN).contains(&n) {
            stats.add_rx_dropped_malformed(1);
            continue;
        }
        match tx.try_send(buf[..n].to_vec()) {
            Ok(()) => {
                let _ = wake.write(1);
            }
            Err(TrySendError::Full(_)) => stats.add_rx_dropped_no_buffer(1),
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}
