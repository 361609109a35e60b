//! The driver side's ring bookkeeping as guest state: serde for the types it is made of (a
//! guest driver's rings travel with a migrating guest, in its vCPU state), and the checks a
//! deserialised driver passes before it is used ([`crate::RingDriver::check_restored`]).

/// serde for `vm_memory::GuestAddress` (a plain `u64`), which has no serde of its own.
pub(crate) mod guest_address {
    use serde::{Deserialize, Deserializer, Serializer};
    use vm_memory::GuestAddress;

    pub(crate) fn serialize<S: Serializer>(addr: &GuestAddress, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(addr.0)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<GuestAddress, D::Error> {
        u64::deserialize(d).map(GuestAddress)
    }
}
