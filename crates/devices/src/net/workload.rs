//! The verifying net workload: sequence-numbered frames sent to an echo peer
//! ([`echo`](super::echo)), echoes checked one by one.
//!
//! All its state is plain data ([`NetWorkload`], with [`NetWorkload::encode`] and
//! [`NetWorkload::decode`]), so a simulated VM can carry it with the guest across a migration.
//! It never touches a queue: a driver ([`NetDriver`](super::driver::NetDriver)) sends the frames
//! it makes and hands it the frames it receives.
//!
//! Frame: destination and source are the device's own MAC (so the unchanged echo passes the
//! device's unicast filter), EtherType 0x88B5 (IEEE local experimental), then
//! `le16 stream; le16 reserved; "VLMN"; le64 seq; le16 body_len; body[body_len]; le64 fnv`, the
//! body a pattern of `(seq, i)` and `fnv` the FNV-1a hash of everything after the EtherType
//! before it. The stream (the queue pair a frame is sent on) comes first so that it is part
//! of the flow the device's receive steering sees.
//!
//! Verdicts: an echo of a frame sent and not yet received is *verified*; of a frame received
//! before, *duplicated* (an error); of a frame declared lost, *late*; a frame of the workload's
//! EtherType whose content, checksum, addresses or sequence number is wrong is *corrupted* (an
//! error); any other frame (the echo of an announcement, say) is *foreign*. Frames still out
//! when the run ends (or that the caller gives up on) are *lost*: UDP may drop them.

use super::config::ETH_HLEN;

/// EtherType of workload frames (IEEE Std 802 local experimental EtherType 1).
pub const WORKLOAD_ETHERTYPE: u16 = 0x88b5;

const MAGIC: [u8; 4] = *b"VLMN";
/// Payload bytes before the body: stream, reserved, magic, seq, body_len.
const HEAD: usize = 4 + 2 + 2 + 8 + 2;
/// Largest body (frames stay within 1514 bytes).
const MAX_BODY: usize = 1400;

/// Ledger entries, one byte per sequence number.
const SENT: u8 = 1;
const RECEIVED: u8 = 2;
const LOST: u8 = 3;

/// The workload's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetReport {
    /// Frames made and handed to the driver.
    pub sent: u64,
    /// Transmit buffers the device returned (frames gone to the wire).
    pub completed: u64,
    /// Echoes received and verified.
    pub verified: u64,
    /// Frames given up on (not echoed in time); UDP may drop.
    pub lost: u64,
    /// Echoes of frames already counted lost (then no longer counted in `lost`).
    pub late: u64,
    /// Echoes of frames already received: an error.
    pub duplicated: u64,
    /// Frames of the workload's EtherType that fail verification: an error.
    pub corrupted: u64,
    /// Frames that are not the workload's.
    pub foreign: u64,
    /// Verified echoes that arrived on another queue pair than the one they were sent on
    /// (receive steering is a SHOULD, so not an error).
    pub misrouted: u64,
}

/// What a received frame turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The echo of an outstanding frame, intact.
    Verified,
    /// The echo of a frame received before.
    Duplicated,
    /// The echo of a frame declared lost.
    Late,
    /// A damaged workload frame.
    Corrupted,
    /// Not a workload frame.
    Foreign,
}

/// The workload's state (plain data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetWorkload {
    /// The device's MAC address, destination and source of every frame.
    pub mac: [u8; 6],
    /// Next sequence number.
    pub next_seq: u64,
    /// Per sequence number: 1 sent, 2 received, 3 lost.
    pub ledger: Vec<u8>,
    /// The counters.
    pub report: NetReport,
}

impl NetWorkload {
    /// A workload for a device with address `mac`.
    pub fn new(mac: [u8; 6]) -> Self {
        Self {
            mac,
            next_seq: 0,
            ledger: Vec::new(),
            report: NetReport::default(),
        }
    }

    /// Frames sent and neither received nor declared lost.
    pub fn outstanding(&self) -> u64 {
        let r = &self.report;
        r.sent.saturating_sub(r.verified + r.lost + r.late)
    }

    /// Makes the next frame, for queue pair `stream`, and records it as sent.
    pub fn next_frame(&mut self, stream: u16) -> Vec<u8> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ledger.push(SENT);
        self.report.sent += 1;
        build(&self.mac, stream, seq)
    }

    /// The driver got a transmit buffer back.
    pub fn tx_completed(&mut self, n: u64) {
        self.report.completed += n;
    }

    /// Checks a frame received on queue pair `pair` and counts it.
    pub fn receive(&mut self, frame: &[u8], pair: u16) -> Verdict {
        let ours = frame.get(12..14) == Some(&WORKLOAD_ETHERTYPE.to_be_bytes()[..]);
        if !ours {
            self.report.foreign += 1;
            return Verdict::Foreign;
        }
        let Some((stream, seq)) = self.check(frame) else {
            self.report.corrupted += 1;
            return Verdict::Corrupted;
        };
        let verdict = match self.ledger.get_mut(seq as usize) {
            Some(state @ &mut SENT) => {
                *state = RECEIVED;
                self.report.verified += 1;
                if stream != pair {
                    self.report.misrouted += 1;
                }
                Verdict::Verified
            }
            Some(state @ &mut LOST) => {
                *state = RECEIVED;
                self.report.lost = self.report.lost.saturating_sub(1);
                self.report.late += 1;
                Verdict::Late
            }
            Some(_) => {
                self.report.duplicated += 1;
                Verdict::Duplicated
            }
            None => {
                self.report.corrupted += 1;
                Verdict::Corrupted
            }
        };
        verdict
    }

    /// Declares every outstanding frame lost; returns how many.
    pub fn declare_lost(&mut self) -> u64 {
        let mut n = 0;
        for state in self.ledger.iter_mut().filter(|s| **s == SENT) {
            *state = LOST;
            n += 1;
        }
        self.report.lost += n;
        n
    }

    /// `(stream, seq)` of an intact workload frame.
    fn check(&self, frame: &[u8]) -> Option<(u16, u64)> {
        if frame.get(..6)? != self.mac || frame.get(6..12)? != self.mac {
            return None;
        }
        let payload = frame.get(ETH_HLEN..)?;
        let head = payload.get(..HEAD)?;
        let stream = u16::from_le_bytes([head[0], head[1]]);
        let seq = u64::from_le_bytes(head[8..16].try_into().ok()?);
        let body_len = usize::from(u16::from_le_bytes([head[16], head[17]]));
        if head[4..8] != MAGIC || head[2..4] != [0, 0] || payload.len() != HEAD + body_len + 8 {
            return None;
        }
        let (covered, sum) = payload.split_at(HEAD + body_len);
        let intact = fnv(covered).to_le_bytes() == sum
            && body_len == body_len_of(seq)
            && covered[HEAD..]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(seq, i));
        intact.then_some((stream, seq))
    }

    /// The state as bytes: mac, next_seq, the ten counters, the ledger.
    pub fn encode(&self) -> Vec<u8> {
        let r = &self.report;
        let mut out = self.mac.to_vec();
        for v in [
            self.next_seq,
            r.sent,
            r.completed,
            r.verified,
            r.lost,
            r.late,
            r.duplicated,
            r.corrupted,
            r.foreign,
            r.misrouted,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.ledger);
        out
    }

    /// The state [`Self::encode`] wrote; `None` if the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mac = bytes.get(..6)?.try_into().ok()?;
        let mut words = [0u64; 10];
        for (i, w) in words.iter_mut().enumerate() {
            let at = 6 + 8 * i;
            *w = u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
        }
        let ledger = bytes.get(86..)?.to_vec();
        let [next_seq, sent, completed, verified, lost, late, duplicated, corrupted, foreign, misrouted] =
            words;
        let valid =
            ledger.len() as u64 == next_seq && ledger.iter().all(|s| (SENT..=LOST).contains(s));
        valid.then_some(Self {
            mac,
            next_seq,
            ledger,
            report: NetReport {
                sent,
                completed,
                verified,
                lost,
                late,
                duplicated,
                corrupted,
                foreign,
                misrouted,
            },
        })
    }
}

/// Body length of frame `seq`: 0..=1400, varying so frames span one to several receive buffers.
fn body_len_of(seq: u64) -> usize {
    (seq.wrapping_mul(389) % (MAX_BODY as u64 + 1)) as usize
}

fn pattern(seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(131).wrapping_add(i as u64 * 7) % 251) as u8
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The frame `seq` of stream `stream` from and to `mac`.
fn build(mac: &[u8; 6], stream: u16, seq: u64) -> Vec<u8> {
    let body_len = body_len_of(seq);
    let mut f = Vec::with_capacity(ETH_HLEN + HEAD + body_len + 8);
    f.extend_from_slice(mac);
    f.extend_from_slice(mac);
    f.extend_from_slice(&WORKLOAD_ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&stream.to_le_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&MAGIC);
    f.extend_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(&(body_len as u16).to_le_bytes());
    f.extend((0..body_len).map(|i| pattern(seq, i)));
    let sum = fnv(&f[ETH_HLEN..]);
    f.extend_from_slice(&sum.to_le_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    #[test]
    fn verdicts() {
        let mut w = NetWorkload::new(MAC);
        let a = w.next_frame(0);
        let b = w.next_frame(1);
        let c = w.next_frame(0);
        assert_eq!(w.receive(&a, 0), Verdict::Verified);
        assert_eq!(w.receive(&a, 0), Verdict::Duplicated);
        let mut bad = b.clone();
        bad[30] ^= 1;
        assert_eq!(w.receive(&bad, 1), Verdict::Corrupted);
        assert_eq!(w.receive(&b[..b.len() - 1], 1), Verdict::Corrupted);
        assert_eq!(
            w.receive(&crate::net::rarp_frame(&MAC), 0),
            Verdict::Foreign
        );
        assert_eq!(w.declare_lost(), 2);
        assert_eq!(w.receive(&c, 1), Verdict::Late);
        let r = w.report;
        assert_eq!(
            (r.sent, r.verified, r.duplicated, r.corrupted),
            (3, 1, 1, 2)
        );
        assert_eq!((r.lost, r.late, r.foreign, r.misrouted), (1, 1, 1, 0));
        assert_eq!(NetWorkload::decode(&w.encode()), Some(w.clone()));
        assert_eq!(NetWorkload::decode(&w.encode()[..85]), None);
    }

    #[test]
    fn frames_fit_the_mtu() {
        let mut w = NetWorkload::new(MAC);
        let lens: Vec<usize> = (0..2000).map(|_| w.next_frame(0).len()).collect();
        assert!(lens
            .iter()
            .all(|&n| (ETH_HLEN + HEAD + 8..=1514).contains(&n)));
        assert!(lens.iter().any(|&n| n > 1024) && lens.iter().any(|&n| n < 128));
    }
}
