//! The protocol version and the rule for accepting a peer's.

/// The version this build speaks. Version 0 is never valid. Version 2 added RoundEnd and
/// RoundAck (the destination acknowledges each pre-copy round; spec-decisions §19); a version 2
/// source talking to a version 1 destination sends neither.
pub const PROTOCOL_VERSION: u32 = 2;

/// The version rule: a side speaking `own` accepts a peer speaking `own` or `own - 1`, so one
/// side can be upgraded at a time; anything else (older, newer, or 0) is refused at Start.
pub fn accepts(own: u32, peer: u32) -> bool {
    peer != 0 && (peer == own || peer.checked_add(1) == Some(own))
}
