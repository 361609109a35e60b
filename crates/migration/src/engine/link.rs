//! The byte stream a migration runs over, behind a small trait: plain TCP here, mutual TLS in
//! `tls.rs`.

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

impl Link for TcpStream {
    fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(timeout)?;
        self.set_write_timeout(timeout)
    }

    fn low_latency(&self) -> io::Result<()> {
        // Nagle's algorithm against the peer's delayed ACK holds a small section back up to
        // 40 ms: the whole downtime target, four times over.
        // The socket buffers stay autotuned (a fixed small size capped the stream at a tenth
        // of what the link carries): the source measures its rate to the destination's
        // RoundAck, which kernel buffering cannot flatter (spec-decisions §19).
        self.set_nodelay(true)
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
