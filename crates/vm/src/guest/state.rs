//! The vCPU state: everything the guest needs to continue that is not in guest memory — each
//! driver's ring bookkeeping and each workload's verification ledger, and the dirtier's
//! position — as one serde value with a postcard encoding, so a guest can be continued in
//! another process from a copy of its memory and these bytes.

use serde::{Deserialize, Serialize};

use super::blk::BlkVcpuState;
use super::dirtier::DirtierState;
use super::net::NetVcpuState;

/// The guest's vCPU state (see the module documentation).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VcpuState {
    /// The blk vCPU, if the machine has a blk function.
    pub blk: Option<BlkVcpuState>,
    /// The net vCPU, if the machine has a net function.
    pub net: Option<NetVcpuState>,
    /// The dirtier.
    pub dirtier: DirtierState,
}

impl VcpuState {
    /// The postcard encoding.
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }

    /// Decodes [`Self::encode`]'s bytes (all of them). What it holds is checked when a guest
    /// is built from it.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        let (state, rest) = postcard::take_from_bytes(bytes)?;
        if rest.is_empty() {
            Ok(state)
        } else {
            Err(postcard::Error::DeserializeBadEncoding)
        }
    }
}
