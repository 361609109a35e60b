//! The protocol version and the rule for accepting a peer's.

/// The version this build speaks. Version 0 is never valid.
pub const PROTOCOL_VERSION: u32 = 1;

/// The version rule: a side speaking `own` accepts a peer speaking `own` or `own - 1`, so one
/// side can be upgraded at a time; anything else (older, newer, or 0) is refused at Start.
/// With version 1 that means exactly 1.
pub fn accepts(own: u32, peer: u32) -> bool {
    peer != 0 && (peer == own || peer.checked_add(1) == Some(own))
}
