//! The device tests' rig is `virtio_lm_device::testing` (shared with the transport's and the
//! device types' tests); this shim lets a test file say `mod common; use common::…`.

#![allow(unused_imports)]

pub use virtio_lm_device::testing::*;
