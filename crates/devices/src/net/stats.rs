//! Counters of a [`Net`](super::Net) device, shared so they stay readable after the device
//! moves into a core.

use std::sync::atomic::{AtomicU64, Ordering};

/// Frame and drop counters. Every datagram the tunnel received is delivered or counted in
/// exactly one of `rx_dropped_*` and `rx_discarded`, or is still waiting for a buffer.
#[derive(Debug, Default)]
pub struct NetStats {
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    tx_errors: AtomicU64,
    tx_malformed: AtomicU64,
    rx_datagrams: AtomicU64,
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    rx_dropped_no_buffer: AtomicU64,
    rx_dropped_filtered: AtomicU64,
    rx_dropped_malformed: AtomicU64,
    rx_bad_chains: AtomicU64,
    rx_discarded: AtomicU64,
    announces: AtomicU64,
}

macro_rules! counter {
    ($get:ident, $add:ident, $doc:literal) => {
        #[doc = $doc]
        pub fn $get(&self) -> u64 {
            self.$get.load(Ordering::Relaxed)
        }

        pub(crate) fn $add(&self, n: u64) {
            self.$get.fetch_add(n, Ordering::Relaxed);
        }
    };
}

impl NetStats {
    counter!(tx_frames, add_tx_frames, "Frames sent to the tunnel.");
    counter!(
        tx_bytes,
        add_tx_bytes,
        "Bytes of the frames sent (without virtio-net headers)."
    );
    counter!(
        tx_errors,
        add_tx_errors,
        "Frames the socket refused with an error other than a full buffer (lost, as on a wire)."
    );
    counter!(
        tx_malformed,
        add_tx_malformed,
        "Transmit chains not sent: writable buffers, no header, or a frame out of size bounds."
    );
    counter!(
        rx_datagrams,
        add_rx_datagrams,
        "Datagrams the tunnel received."
    );
    counter!(rx_frames, add_rx_frames, "Frames delivered to the driver.");
    counter!(
        rx_bytes,
        add_rx_bytes,
        "Bytes of the frames delivered (without headers)."
    );
    counter!(
        rx_dropped_no_buffer,
        add_rx_dropped_no_buffer,
        "Frames dropped because no receive buffer was posted while the backlog was full."
    );
    counter!(
        rx_dropped_filtered,
        add_rx_dropped_filtered,
        "Frames dropped by the receive filter (RX mode, MAC table, VLAN table)."
    );
    counter!(
        rx_dropped_malformed,
        add_rx_dropped_malformed,
        "Datagrams that are not a frame (shorter than an Ethernet header, longer than the MTU), \
         or frames the posted buffers could not hold."
    );
    counter!(
        rx_bad_chains,
        add_rx_bad_chains,
        "Receive chains returned empty: readable buffers or fewer bytes than a header."
    );
    counter!(
        rx_discarded,
        add_rx_discarded,
        "Frames received and never delivered because the device was reset or went away \
         (after a migration, the source's undelivered frames)."
    );
    counter!(
        announces,
        add_announces,
        "Announcements made (gratuitous RARP frames sent)."
    );
}
