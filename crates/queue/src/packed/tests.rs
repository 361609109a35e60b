//! Packed-ring rules, hostile rings and seed 001 state save/restore.
//!
//! Seed 001 is /work/shared/seeds/001_f94b94e79cc5632d.txt ("virtqueue state"); tests that check
//! one of its statements quote it.

use virtio_lm_spec::ring::{PackedDescriptor, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED};
use vm_memory::{Bytes, GuestAddress};
use zerocopy::FromBytes;

use super::layout;
use crate::test_rig::{buffer, Format, Packed};
use crate::{
    BufferSpec, DescriptorChain, DeviceQueue, PackedDriver, PackedQueue, QueueConfig, QueueError,
    RingFeatures, RingKind, RingPosition, UsedBuffer,
};

mod hostile;
mod notify;
mod rules;
mod state;

/// Guest memory: 2 MiB, rings at 0x1000 (a 32768-entry ring ends below 0x8_2000).
const MEM_SIZE: usize = Packed::MEM_SIZE;
/// Data buffers.
const DATA: u64 = 0x10_0000;
/// Indirect tables.
const TABLES: u64 = 0x18_0000;

type Rig = crate::test_rig::Rig<Packed>;

/// A 0x100-byte buffer number `i`.
fn buf(i: u64, writable: bool) -> BufferSpec {
    buffer(DATA + (i % 0x400) * 0x100, writable)
}

/// A chain of `n` buffers: one readable, the rest writable.
fn chain_of(n: u16) -> Vec<BufferSpec> {
    (0..u64::from(n))
        .map(|i| buf(i, i != 0 || n == 1))
        .collect()
}

fn pos(index: u16, wrap_counter: bool) -> RingPosition {
    RingPosition {
        index,
        wrap_counter,
    }
}

/// A raw descriptor for the hostile hooks (AVAIL/USED bits are set by `push_raw_chain`).
fn raw(addr: u64, len: u32, flags: u16, id: u16) -> PackedDescriptor {
    PackedDescriptor::new(addr, len, flags, id)
}

impl Rig {
    /// Adds a chain and publishes it; returns its buffer id.
    fn add(&mut self, bufs: &[BufferSpec]) -> u16 {
        let id = self.driver.add_chain(&self.mem, bufs).unwrap();
        self.driver.publish(&self.mem).unwrap();
        id
    }

    fn pop(&mut self) -> DescriptorChain {
        self.device
            .pop(&self.mem)
            .unwrap()
            .expect("a chain is available")
    }

    /// Uses `id` with `len` bytes and publishes it.
    fn complete(&mut self, id: u16, len: u32) {
        self.device.add_used(&self.mem, id, len).unwrap();
        self.device.publish_used(&self.mem).unwrap();
    }

    fn collect(&mut self) -> Vec<UsedBuffer> {
        self.driver.collect_used(&self.mem).unwrap()
    }

    /// Adds a chain of `n` descriptors, takes it, uses it with `len` and collects it back,
    /// checking the id and length the driver sees.
    fn cycle(&mut self, n: u16, len: u32) {
        let id = self.add(&chain_of(n));
        let chain = self.pop();
        assert_eq!((chain.id, chain.ring_slots), (id, n));
        self.complete(id, len);
        assert_eq!(self.collect(), vec![UsedBuffer { id, len }]);
    }

    /// Writes a raw chain at the driver's available position and makes it available.
    fn raw_chain(&mut self, descs: &[PackedDescriptor]) {
        self.driver.push_raw_chain(&self.mem, descs).unwrap();
        self.driver.publish(&self.mem).unwrap();
    }

    /// Pops expecting an error, checks that nothing moved (twice: the error is stable).
    fn pop_err(&mut self) -> QueueError {
        let before = self.device.state().unwrap();
        let err = self.device.pop(&self.mem).unwrap_err();
        assert_eq!(
            self.device.state().unwrap(),
            before,
            "a rejected chain must not advance the queue"
        );
        assert_eq!(
            self.device.pop(&self.mem).unwrap_err(),
            err,
            "the same chain is rejected again"
        );
        err
    }

    /// The descriptor in ring slot `index` as guest memory holds it.
    fn desc_at(&self, index: u16) -> PackedDescriptor {
        let raw: [u8; 16] = self
            .mem
            .read_obj(layout::desc(&self.config, index))
            .unwrap();
        PackedDescriptor::read_from_bytes(&raw).unwrap()
    }

    /// AVAIL and USED bits of ring slot `index`: (avail, used).
    fn bits_at(&self, index: u16) -> (bool, bool) {
        let flags = self.desc_at(index).flags.get();
        (
            flags & VIRTQ_DESC_F_AVAIL != 0,
            flags & VIRTQ_DESC_F_USED != 0,
        )
    }

    /// Replaces the device with one restored from its own saved state (a migration).
    /// Checks that the restored device reports the very state it was restored from.
    fn migrate(&mut self) {
        let state = self.device.state().unwrap();
        self.device = PackedQueue::from_state(self.config, &state, &self.mem).unwrap();
        assert_eq!(self.device.state().unwrap(), state);
    }
}
