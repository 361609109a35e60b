//! A core-level driver for the device tests: it programs a `DeviceCore` the way a transport
//! would, owns the ring drivers, and offers test device types.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use virtio_lm_device::{
    CoreOptions, CountingEntropy, DeviceCore, DeviceError, InterruptCounter, QueueAccess, Quiesce,
    QuiesceMode, Rng, VirtioDevice,
};
use virtio_lm_queue::{BufferSpec, DescriptorChain, QueueConfig, RingKind, UsedBuffer};
use virtio_lm_spec::{Feature, Profile};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub type Mem = GuestMemoryMmap<()>;

pub const QUEUE_BASE: u64 = 0x1000;
pub const DATA: u64 = 0x10_0000;
pub const MEM_SIZE: usize = 0x40_0000;

pub fn memory() -> Arc<Mem> {
    Arc::new(Mem::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap())
}

pub use virtio_lm_queue::RingDriver;

/// Test shorthands on the ring driver: a failure is the test's failure.
pub trait TestRing {
    fn create(config: QueueConfig, mem: &Mem) -> Self;
    fn add(&mut self, mem: &Mem, bufs: &[BufferSpec]) -> u16;
    fn collect(&mut self, mem: &Mem) -> Vec<UsedBuffer>;
}

impl TestRing for RingDriver {
    fn create(config: QueueConfig, mem: &Mem) -> Self {
        RingDriver::new(config, mem).unwrap()
    }

    fn add(&mut self, mem: &Mem, bufs: &[BufferSpec]) -> u16 {
        self.add_chain(mem, bufs).unwrap()
    }

    fn collect(&mut self, mem: &Mem) -> Vec<UsedBuffer> {
        self.collect_used(mem).unwrap()
    }
}

/// Drives one `DeviceCore` through its status, features and queues.
pub struct CoreDriver {
    pub mem: Arc<Mem>,
    pub irq: Arc<InterruptCounter>,
    pub core: DeviceCore<Mem>,
    pub rings: Vec<Option<RingDriver>>,
    pub kind: RingKind,
}

use virtio_lm_device::testing;
#[allow(unused_imports)]
pub use virtio_lm_device::testing::{RUNNING, SETUP};

pub fn bit(feature: Feature) -> u64 {
    Profile::Seeds.mask(feature).unwrap()
}

impl CoreDriver {
    pub fn new(device: Box<dyn VirtioDevice<Mem>>) -> Self {
        Self::with_options(device, CoreOptions::default())
    }

    pub fn with_options(device: Box<dyn VirtioDevice<Mem>>, options: CoreOptions) -> Self {
        let mem = memory();
        let irq = Arc::new(InterruptCounter::default());
        let core = DeviceCore::new(device, mem.clone(), irq.clone(), options).unwrap();
        Self {
            mem,
            irq,
            core,
            rings: Vec::new(),
            kind: RingKind::Split,
        }
    }

    pub fn rng() -> Self {
        Self::new(Box::new(Rng::new(Box::new(CountingEntropy::new(0)), 16)))
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK.
    pub fn negotiate(&mut self, features: u64) {
        self.kind = testing::negotiate(&mut self.core, features);
    }

    /// Lays out and enables every queue (the ring memory is initialised by the ring driver).
    pub fn setup_queues(&mut self, features: u64) {
        let ring = testing::ring_features(&self.core, features);
        let mem = self.mem.clone();
        self.rings =
            testing::setup_queues(&mut self.core, &*mem, self.kind, ring, QUEUE_BASE, 0x10000);
    }

    /// Programs the queue registers for the rings the driver already has (after a reset, to
    /// continue on the same ring memory).
    pub fn reprogram_queues(&mut self) {
        testing::reprogram_queues(&mut self.core, &self.rings);
    }

    /// The whole initialisation with `features`, ending with DRIVER_OK.
    pub fn start(&mut self, features: u64) {
        self.negotiate(features);
        self.setup_queues(features);
        self.core.write_status(RUNNING);
        assert_eq!(self.core.status(), RUNNING, "device running");
    }

    pub fn start_default(&mut self) -> u64 {
        let features = bit(Feature::Version1)
            | bit(Feature::DeviceStop)
            | bit(Feature::QueueState)
            | bit(Feature::Suspend)
            | bit(Feature::EventIdx);
        self.start(features);
        features
    }

    /// Adds `count` one-buffer writable chains to queue 0 and publishes them (no kick).
    pub fn offer(&mut self, count: usize) -> Vec<u16> {
        let mem = self.mem.clone();
        let ring = self.rings[0].as_mut().unwrap();
        let ids = (0..count)
            .map(|i| {
                ring.add(
                    &mem,
                    &[BufferSpec::writable(DATA + (i as u64 % 64) * 0x100, 0x40)],
                )
            })
            .collect();
        ring.publish(&*mem).unwrap();
        ids
    }

    pub fn collect(&mut self) -> Vec<UsedBuffer> {
        let mem = self.mem.clone();
        self.rings[0].as_mut().unwrap().collect(&mem)
    }

    /// A checksum of all guest memory, to prove the device wrote nothing.
    pub fn memory_checksum(&self) -> u64 {
        let mut buf = vec![0u8; MEM_SIZE];
        self.mem.read_slice(&mut buf, GuestAddress(0)).unwrap();
        buf.iter()
            .enumerate()
            .fold(0xcbf29ce484222325u64, |h, (i, b)| {
                (h ^ u64::from(*b) ^ (i as u64).rotate_left(17)).wrapping_mul(0x100000001b3)
            })
    }
}

/// A device whose requests stay in process until released: exercises drain and in-flight
/// recording. Completes each buffer with its whole writable length.
pub struct SlowDevice {
    pub held: Arc<Mutex<VecDeque<(u16, u32)>>>,
    pub release: Arc<AtomicBool>,
    pub fail_quiesce: Arc<AtomicBool>,
}

impl SlowDevice {
    pub fn new() -> Self {
        Self {
            held: Arc::default(),
            release: Arc::new(AtomicBool::new(false)),
            fail_quiesce: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl VirtioDevice<Mem> for SlowDevice {
    fn device_type(&self) -> u32 {
        0xffff
    }

    fn device_features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![8]
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset + i) as u8;
        }
    }

    fn process_queue(
        &mut self,
        _index: u16,
        queue: &mut QueueAccess<'_, Mem>,
    ) -> Result<(), DeviceError> {
        let mut chain = DescriptorChain::default();
        while let Some(c) = queue.pop()? {
            chain = c;
            self.held
                .lock()
                .unwrap()
                .push_back((chain.id(), chain.writable_len()));
        }
        let _ = chain;
        self.poll(std::slice::from_mut(queue))
    }

    fn poll(&mut self, queues: &mut [QueueAccess<'_, Mem>]) -> Result<(), DeviceError> {
        if !self.release.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(queue) = queues.first_mut() else {
            return Ok(());
        };
        while let Some((id, len)) = self.held.lock().unwrap().pop_front() {
            queue.add_used(id, len)?;
        }
        Ok(())
    }

    fn quiesce(&mut self, mode: QuiesceMode) -> Quiesce {
        if self.fail_quiesce.load(Ordering::SeqCst) {
            return Quiesce::Failed;
        }
        match mode {
            QuiesceMode::RecordInflight => {
                // The requests stay in the queue's in-flight list for whoever resumes.
                self.held.lock().unwrap().clear();
                Quiesce::Done
            }
            QuiesceMode::Drain if self.held.lock().unwrap().is_empty() => Quiesce::Done,
            QuiesceMode::Drain => Quiesce::Pending,
        }
    }

    fn reset(&mut self) {
        self.held.lock().unwrap().clear();
    }
}

/// FNV-style checksum of `len` bytes of guest memory at `start`.
pub fn checksum(mem: &Mem, start: u64, len: usize) -> u64 {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(start)).unwrap();
    buf.iter()
        .enumerate()
        .fold(0xcbf29ce484222325u64, |h, (i, b)| {
            (h ^ u64::from(*b) ^ (i as u64).rotate_left(17)).wrapping_mul(0x100000001b3)
        })
}

// ==== Device-context helpers (tests/context_*.rs) ===========================================

pub mod context {
    //! A device that adopts in-flight chains handed over by a restore and keeps a
    //! device-specific state, a destination-core builder on shared memory, and field-level
    //! editing of encoded contexts.

    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    use std::sync::{Arc, Mutex};

    use virtio_lm_device::context::{
        parse_fields, persist, ContextWriter, DeviceField, Persist, ValidatedState,
    };
    use virtio_lm_device::{
        CoreOptions, DeviceCore, DeviceError, InterruptCounter, QueueAccess, Quiesce, QuiesceMode,
        VirtioDevice,
    };
    use virtio_lm_queue::{DescriptorChain, RingKind, UsedBuffer};
    use virtio_lm_spec::context::{FieldType, FIELD_FLAG_OPTIONAL};

    use super::{CoreDriver, Mem, RingDriver};

    /// Device-specific field of [`AdoptingDevice`]: `u8 mode` (a blk-range type, as a test
    /// device type has no range of its own).
    pub const MODE_FIELD: FieldType = FieldType(0x0201);

    /// Bytes of [`AdoptingDevice`]'s configuration space (byte `i` reads `i`).
    pub const ADOPTING_CONFIG_LEN: usize = 4;

    /// Like `SlowDevice` (requests held until `release`), but it takes over the in-flight
    /// chains the core hands it when a queue starts, so each completes exactly once. It also keeps a
    /// device-specific `mode` byte saved as [`MODE_FIELD`].
    pub struct AdoptingDevice {
        pub held: Arc<Mutex<VecDeque<(u16, u32)>>>,
        pub release: Arc<AtomicBool>,
        pub mode: Arc<AtomicU8>,
    }

    impl AdoptingDevice {
        pub fn new(release: bool) -> Self {
            Self {
                held: Arc::default(),
                release: Arc::new(AtomicBool::new(release)),
                mode: Arc::default(),
            }
        }
    }

    /// `mode` travels as the typed state; missing means 0. The configuration space is 4
    /// read-only bytes.
    impl Persist for AdoptingDevice {
        type State = u8;

        fn save(&self) -> u8 {
            self.mode.load(Ordering::SeqCst)
        }

        fn encode(mode: &u8) -> Vec<DeviceField> {
            vec![DeviceField {
                field_type: MODE_FIELD,
                flags: 0,
                value: vec![*mode],
            }]
        }

        fn decode(&self, fields: &[DeviceField], config: &[u8]) -> Result<u8, DeviceError> {
            let mut mode = None;
            for f in fields {
                match (f.field_type, f.value.as_slice()) {
                    (MODE_FIELD, [m]) if *m <= 3 => mode = Some(*m),
                    (MODE_FIELD, _) => return Err(DeviceError::BadState("bad mode")),
                    _ if f.flags & FIELD_FLAG_OPTIONAL != 0 => {}
                    _ => return Err(DeviceError::BadState("unknown mandatory field")),
                }
            }
            let mut own = [0; ADOPTING_CONFIG_LEN];
            self.read_config(0, &mut own);
            persist::check_read_only_config(&own, config)?;
            Ok(mode.unwrap_or(0))
        }

        fn restore(&mut self, mode: u8) {
            self.mode.store(mode, Ordering::SeqCst);
        }
    }

    impl VirtioDevice<Mem> for AdoptingDevice {
        fn device_type(&self) -> u32 {
            0xfffe
        }

        fn device_features(&self) -> u64 {
            0
        }

        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![8]
        }

        fn read_config(&self, offset: usize, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = (offset + i) as u8;
            }
        }

        fn adopt_inflight(
            &mut self,
            _index: u16,
            chains: Vec<DescriptorChain>,
            queue: &mut QueueAccess<'_, Mem>,
        ) -> Result<(), DeviceError> {
            self.held
                .lock()
                .unwrap()
                .extend(chains.iter().map(|c| (c.id(), c.writable_len())));
            self.poll(std::slice::from_mut(queue))
        }

        fn process_queue(
            &mut self,
            _index: u16,
            queue: &mut QueueAccess<'_, Mem>,
        ) -> Result<(), DeviceError> {
            while let Some(chain) = queue.pop()? {
                let entry = (chain.id(), chain.writable_len());
                self.held.lock().unwrap().push_back(entry);
            }
            self.poll(std::slice::from_mut(queue))
        }

        fn poll(&mut self, queues: &mut [QueueAccess<'_, Mem>]) -> Result<(), DeviceError> {
            if !self.release.load(Ordering::SeqCst) {
                return Ok(());
            }
            let Some(queue) = queues.first_mut() else {
                return Ok(());
            };
            while let Some((id, len)) = self.held.lock().unwrap().pop_front() {
                queue.add_used(id, len)?;
            }
            Ok(())
        }

        fn quiesce(&mut self, mode: QuiesceMode) -> Quiesce {
            match mode {
                QuiesceMode::RecordInflight => {
                    self.held.lock().unwrap().clear();
                    Quiesce::Done
                }
                QuiesceMode::Drain if self.held.lock().unwrap().is_empty() => Quiesce::Done,
                QuiesceMode::Drain => Quiesce::Pending,
            }
        }

        fn reset(&mut self) {
            self.held.lock().unwrap().clear();
            self.mode.store(0, Ordering::SeqCst);
        }

        fn config_len(&self) -> usize {
            ADOPTING_CONFIG_LEN
        }

        fn save_state(&self) -> Vec<DeviceField> {
            persist::save(self)
        }

        fn decode_state(
            &self,
            fields: &[DeviceField],
            config: &[u8],
        ) -> Result<ValidatedState, DeviceError> {
            persist::decode(self, fields, config)
        }

        fn restore_state(&mut self, state: ValidatedState) {
            persist::restore(self, state)
        }
    }

    /// Options that leave requests in flight on a stop or suspend.
    pub fn record_inflight() -> CoreOptions {
        CoreOptions {
            quiesce_mode: QuiesceMode::RecordInflight,
            ..CoreOptions::default()
        }
    }

    /// A destination: a fresh core on `source`'s guest memory that takes over its ring drivers
    /// (the guest keeps running its rings across the migration).
    pub fn destination(
        source: &mut CoreDriver,
        device: Box<dyn VirtioDevice<Mem>>,
        options: CoreOptions,
    ) -> CoreDriver {
        let irq = Arc::new(InterruptCounter::default());
        let core = DeviceCore::new(device, source.mem.clone(), irq.clone(), options).unwrap();
        CoreDriver {
            mem: source.mem.clone(),
            irq,
            core,
            rings: std::mem::take(&mut source.rings),
            kind: source.kind,
        }
    }

    /// A fresh core on its own memory, in status 0 (a restore target).
    pub fn fresh(device: Box<dyn VirtioDevice<Mem>>, options: CoreOptions) -> CoreDriver {
        let mut d = CoreDriver::with_options(device, options);
        d.kind = RingKind::Split;
        d
    }

    /// Collects queue 0's used buffers and re-enables notifications, as a driver does after
    /// handling an interrupt (with EVENT_IDX this moves `used_event` to what it consumed).
    pub fn collect_rearm(d: &mut CoreDriver) -> Vec<UsedBuffer> {
        let used = d.collect();
        let mem = d.mem.clone();
        match d.rings[0].as_mut().unwrap() {
            RingDriver::Split(r) => r.enable_interrupts(&*mem).unwrap(),
            RingDriver::Packed(r) => r.enable_interrupts(&*mem).unwrap(),
        };
        used
    }

    /// One field of an encoded context, owned, for editing.
    pub type RawField = (FieldType, u16, Vec<u8>);

    /// The fields of an encoded context.
    pub fn fields(bytes: &[u8]) -> Vec<RawField> {
        parse_fields(bytes)
            .unwrap()
            .into_iter()
            .map(|f| (f.field_type, f.flags, f.value.to_vec()))
            .collect()
    }

    /// Encodes `fields` as they are (no marker or order rules applied).
    pub fn build(fields: &[RawField]) -> Vec<u8> {
        let mut w = ContextWriter::new();
        for (t, flags, value) in fields {
            w.field(*t, *flags, value).unwrap();
        }
        w.into_bytes()
    }

    /// Byte offset of field `i` in `build(fields)`.
    pub fn offset_of(fields: &[RawField], i: usize) -> usize {
        fields[..i]
            .iter()
            .map(|(_, _, v)| 8 + v.len().div_ceil(8) * 8)
            .sum()
    }

    /// Position of the first field of type `t`.
    pub fn position(fields: &[RawField], t: FieldType) -> usize {
        fields.iter().position(|f| f.0 == t).unwrap()
    }
}
