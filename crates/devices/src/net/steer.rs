//! Automatic receive steering (virtio spec 5.1.6.5.5): once the driver has transmitted a frame
//! of a flow on transmitqN, frames of that flow are received on receiveqN; frames of flows never
//! transmitted go to receiveq1.
//!
//! A flow is identified symmetrically (both directions of a conversation are one flow): the two
//! MAC addresses in either order, the EtherType, and the first four bytes after it (IPv4's
//! version and length, the workload's stream number, ...). A frame echoed back unchanged is of
//! the same flow as the frame sent.

use std::collections::HashMap;

/// Flows remembered at most; the table starts over when full.
const MAX_FLOWS: usize = 1024;

/// The flow table.
#[derive(Debug, Default)]
pub(crate) struct Steering {
    flows: HashMap<u64, u16>,
}

impl Steering {
    /// The driver transmitted `frame` on queue pair `pair`.
    pub(crate) fn learn(&mut self, frame: &[u8], pair: u16) {
        if self.flows.len() >= MAX_FLOWS {
            self.flows.clear();
        }
        self.flows.insert(flow_hash(frame), pair);
    }

    /// The queue pair to receive `frame` on, among the first `active` pairs.
    pub(crate) fn pick(&self, frame: &[u8], active: u16) -> u16 {
        match self.flows.get(&flow_hash(frame)) {
            Some(&pair) if pair < active => pair,
            _ => 0,
        }
    }

    /// Forgets every flow.
    pub(crate) fn clear(&mut self) {
        self.flows.clear();
    }
}

/// FNV-1a over the flow key of `frame` (missing bytes count as absent).
fn flow_hash(frame: &[u8]) -> u64 {
    let a = frame.get(0..6).unwrap_or(&[]);
    let b = frame.get(6..12).unwrap_or(&[]);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let rest = frame.get(12..18).unwrap_or(frame.get(12..).unwrap_or(&[]));
    [lo, hi, rest]
        .iter()
        .flat_map(|part| part.iter().chain(std::iter::once(&0xa5)))
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &byte| {
            (h ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_are_one_flow() {
        let mut there = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5, 0, 1, 0, 0];
        let mut back = there.clone();
        back[..6].copy_from_slice(&there[6..12]);
        back[6..12].copy_from_slice(&there[..6]);
        let mut s = Steering::default();
        s.learn(&there, 3);
        assert_eq!(s.pick(&back, 4), 3);
        assert_eq!(s.pick(&back, 3), 0, "inactive pair: receiveq1");
        there[14] = 9;
        assert_eq!(s.pick(&there, 4), 0, "another flow");
    }
}
