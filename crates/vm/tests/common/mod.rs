//! The machine tests' shared setup: the crate's test rig.

#![allow(unused_imports)]

pub use virtio_lm_vm::testing::{image, localhost, options, run_for};
