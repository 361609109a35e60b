//! Runs the library's verifying workload (`NetWorkload`) through a `NetRig` against an echo
//! peer, and accounts for every frame the sockets may have dropped.

use std::time::{Duration, Instant};

use virtio_lm_devices::net::echo::EchoStats;
use virtio_lm_devices::net::workload::NetWorkload;
use virtio_lm_devices::NetStats;

use super::NetRig;

/// Frames the tunnel dropped, per place, summed over every device the workload ran on.
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketDrops {
    /// Datagrams the devices sent.
    pub device_sent: u64,
    /// Datagrams the devices received.
    pub device_received: u64,
    /// Frames the devices dropped themselves (no buffer, filter, malformed).
    pub device_dropped: u64,
}

impl SocketDrops {
    /// Adds a device's counters (after it went away: its discarded frames are counted then).
    pub fn add(&mut self, stats: &NetStats) {
        self.device_sent += stats.tx_frames() + stats.announces();
        self.device_received += stats.rx_datagrams();
        self.device_dropped += stats.rx_dropped_no_buffer()
            + stats.rx_dropped_filtered()
            + stats.rx_dropped_malformed()
            + stats.rx_discarded();
    }

    /// Frames lost on the way: to the echo, back from it, and in the devices.
    pub fn total(&self, echo: &EchoStats) -> u64 {
        let echo_got = echo.datagrams() + echo.send_errors();
        self.device_sent.saturating_sub(echo_got)
            + echo.datagrams().saturating_sub(self.device_received)
            + self.device_dropped
    }
}

/// The workload, the rig it runs on, and how many frames it keeps out.
pub struct Runner {
    pub rig: NetRig,
    pub w: NetWorkload,
    pub window: u64,
    pub streams: u16,
    next_stream: u16,
    /// Echoes seen at the last progress, and when.
    progress: (u64, Instant),
}

/// With the window full and no echo for this long, the frames out are declared lost (an echo
/// over loopback takes well under a millisecond; one that still comes is counted late).
const STALL: Duration = Duration::from_millis(50);

impl Runner {
    pub fn new(rig: NetRig, window: u64, streams: u16) -> Self {
        let mac = rig.config(0, 6).try_into().unwrap();
        Self {
            rig,
            w: NetWorkload::new(mac),
            window,
            streams,
            next_stream: 0,
            progress: (0, Instant::now()),
        }
    }

    /// Collects completions and echoes (verifying each), reposts receive buffers, sends new
    /// frames up to the window, and lets the device run.
    pub fn step(&mut self) {
        self.collect();
        let seen = self.w.report.verified + self.w.report.late;
        if seen != self.progress.0 {
            self.progress = (seen, Instant::now());
        } else if self.w.outstanding() >= self.window && self.progress.1.elapsed() > STALL {
            self.w.declare_lost();
            self.progress.1 = Instant::now();
        }
        while self.w.outstanding() < self.window {
            let stream = self.next_stream;
            self.next_stream = (self.next_stream + 1) % self.streams;
            let frame = self.w.next_frame(stream);
            assert!(self.rig.send(stream, &frame), "transmit queue full");
        }
        self.rig.pump();
    }

    /// Collects completions and echoes and reposts receive buffers.
    pub fn collect(&mut self) {
        for pair in 0..self.rig.pairs() {
            let n = self.rig.collect_tx(pair);
            self.w.tx_completed(n as u64);
            for frame in self.rig.receive(pair, 0, Duration::ZERO) {
                self.w.receive(&frame, pair);
            }
        }
    }

    /// Waits (bounded) for the outstanding echoes, then declares the rest lost; frames
    /// declared lost earlier get a grace period to arrive late (a loaded machine).
    pub fn settle(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut grace: Option<Instant> = None;
        while Instant::now() < deadline {
            if self.w.outstanding() == 0 {
                let since = *grace.get_or_insert_with(Instant::now);
                if self.w.report.lost == 0 || since.elapsed() > Duration::from_millis(300) {
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(300));
            self.rig.pump();
            self.collect();
        }
        self.w.declare_lost();
    }
}
