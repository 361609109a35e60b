//! The byte stream a migration runs over, behind a small trait so TLS can be added later.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// A connected, reliable, ordered byte stream between source and destination.
pub trait Link: Read + Write + Send {
    /// Sets both directions' timeouts (`None`: block forever).
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Prepares the link for the handshake's small messages: a transport that batches small
    /// writes must send them at once (Ready, Commit and CommitAck are on the downtime path).
    fn low_latency(&self) -> io::Result<()> {
        Ok(())
    }
    /// Closes both directions (the peer sees end of stream).
    fn close(&self);
    /// The peer, for logs.
    fn peer(&self) -> String;
}

/// Kernel socket buffer size a migration link asks for, each direction (the kernel doubles it).
pub const LINK_BUFFER: usize = 256 << 10;

fn set_buffer(stream: &TcpStream, option: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = LINK_BUFFER as libc::c_int;
    // SAFETY: the descriptor is the stream's own, open for the duration of the call; the option
    // value is a c_int on this stack frame, and its exact size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Link for TcpStream {
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }

    fn low_latency(&self) -> io::Result<()> {
        // Nagle's algorithm against the peer's delayed ACK holds a small section back up to
        // 40 ms: the whole downtime target, four times over.
        self.set_nodelay(true)?;
        // The source measures its transfer rate as its writes complete; with autotuned buffers
        // (megabytes on loopback) a round "ends" while much of it still waits in the kernel,
        // the expected downtime looks better than it is, and the backlog lands in the
        // downtime. Small buffers keep what is in flight to a fraction of a millisecond.
        set_buffer(self, libc::SO_SNDBUF)?;
        set_buffer(self, libc::SO_RCVBUF)
    }

    fn close(&self) {
        // Already closed by the peer is as good.
        let _ = self.shutdown(Shutdown::Both);
    }

    fn peer(&self) -> String {
        self.peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|e| format!("(peer unknown: {e})"))
    }
}
