//! The driver side of virtio-pci: what a guest driver (and, later, the hypervisor's migration
//! code) does through the registers of a [`PciTransport`].

mod admin;
mod caps;
mod io;
mod lifecycle;
mod ring;
mod ring_reset;
mod setup;
mod state;
mod stepwise;
mod types;

use std::collections::BTreeMap;
use std::sync::Arc;

use virtio_lm_spec::pci::offset;
use virtio_lm_spec::{DeviceStatus, Feature, Profile};
use vm_memory::GuestMemory;

pub use caps::{discover, Region, Regions};
pub use ring::{DriverQueue, RingDriver};
pub use state::{DriverState, QueueBookkeeping};
pub use stepwise::InitStep;
pub use types::{Notifier, OutstandingChain, PollPolicy, QueueSetup, QueueStateRegs, SavedState};

use crate::error::PciError;
use crate::transport::PciTransport;

/// A virtio-pci driver: discovers the function's regions from its capability list and drives
/// the device through them (initialisation, buffers and notifications, DEVICE_STOPPED, SUSPEND,
/// queue state, reset and recovery).
pub struct PciDriver<M: GuestMemory> {
    transport: Arc<dyn PciTransport>,
    mem: Arc<M>,
    profile: Profile,
    regions: Regions,
    poll: PollPolicy,
    wanted: u64,
    features: u64,
    config_vector: u16,
    setups: Vec<QueueSetup>,
    queues: BTreeMap<u16, DriverQueue>,
}

impl<M: GuestMemory> PciDriver<M> {
    /// A driver for the function behind `transport`, with rings in `mem`, numbering features by
    /// `profile`. Reads the capability list; touches no device register.
    pub fn new(
        transport: Arc<dyn PciTransport>,
        mem: Arc<M>,
        profile: Profile,
    ) -> Result<Self, PciError> {
        let regions = discover(&*transport)?;
        Ok(Self {
            transport,
            mem,
            profile,
            regions,
            poll: PollPolicy::default(),
            wanted: 0,
            features: 0,
            config_vector: 0,
            setups: Vec::new(),
            queues: BTreeMap::new(),
        })
    }

    /// The regions found in the capability list.
    pub fn regions(&self) -> &Regions {
        &self.regions
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn PciTransport> {
        &self.transport
    }

    /// Guest memory.
    pub fn mem(&self) -> &Arc<M> {
        &self.mem
    }

    /// The numbering profile of feature and status bits.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Changes how long status waits last.
    pub fn set_poll_policy(&mut self, policy: PollPolicy) {
        self.poll = policy;
    }

    /// The MSI-X vector [`Self::init`] routes configuration changes to (default 0;
    /// [`VIRTIO_MSI_NO_VECTOR`](virtio_lm_spec::pci::VIRTIO_MSI_NO_VECTOR) for INTx).
    pub fn set_config_vector(&mut self, vector: u16) {
        self.config_vector = vector;
    }

    // ---- registers ------------------------------------------------------------------------

    fn common(&self, field: usize) -> u64 {
        self.regions.common.offset + field as u64
    }

    fn read_common<const N: usize>(&self, field: usize) -> [u8; N] {
        let mut b = [0u8; N];
        self.transport.read(self.common(field), &mut b);
        b
    }

    fn read16(&self, field: usize) -> u16 {
        u16::from_le_bytes(self.read_common(field))
    }

    fn read32(&self, field: usize) -> u32 {
        u32::from_le_bytes(self.read_common(field))
    }

    fn write16(&self, field: usize, value: u16) {
        self.transport
            .write(self.common(field), &value.to_le_bytes());
    }

    fn write32(&self, field: usize, value: u32) {
        self.transport
            .write(self.common(field), &value.to_le_bytes());
    }

    /// The 64-bit queue address `field`, written as two 32-bit halves (low first).
    fn write64(&self, field: usize, value: u64) {
        self.write32(field, value as u32);
        self.write32(field + 4, (value >> 32) as u32);
    }

    /// The device status.
    pub fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.read_common::<1>(offset::DEVICE_STATUS)[0])
    }

    fn write_status(&self, value: DeviceStatus) {
        self.transport
            .write(self.common(offset::DEVICE_STATUS), &[value.bits()]);
    }

    /// The configuration generation.
    pub fn config_generation(&self) -> u8 {
        self.read_common::<1>(offset::CONFIG_GENERATION)[0]
    }

    /// Reads (and so clears) the ISR status.
    pub fn read_isr(&self) -> u8 {
        let mut b = [0u8; 1];
        self.transport.read(self.regions.isr.offset, &mut b);
        b[0]
    }

    /// Reads device-specific configuration (nothing if the function has none).
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(device) = self.regions.device {
            self.transport.read(device.offset + offset, data);
        }
    }

    /// Writes device-specific configuration (ignored if the function has none).
    pub fn write_config(&self, offset: u64, data: &[u8]) {
        if let Some(device) = self.regions.device {
            self.transport.write(device.offset + offset, data);
        }
    }

    /// The 64 feature bits the device offers (both 32-bit windows).
    pub fn device_features(&self) -> u64 {
        self.write32(offset::DEVICE_FEATURE_SELECT, 0);
        let low = self.read32(offset::DEVICE_FEATURE);
        self.write32(offset::DEVICE_FEATURE_SELECT, 1);
        let high = self.read32(offset::DEVICE_FEATURE);
        u64::from(high) << 32 | u64::from(low)
    }

    /// The features negotiated by the last [`Self::init`].
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Whether `feature` was negotiated.
    pub fn negotiated(&self, feature: Feature) -> bool {
        self.profile
            .mask(feature)
            .is_some_and(|m| self.features & m != 0)
    }

    fn require(&self, feature: Feature) -> Result<(), PciError> {
        if self.negotiated(feature) {
            Ok(())
        } else {
            Err(PciError::FeatureNotNegotiated(feature))
        }
    }

    /// Re-reads the status until `done` holds; fails at once on DEVICE_NEEDS_RESET, and after
    /// the poll policy's attempts.
    fn wait_for(
        &self,
        what: &'static str,
        done: impl Fn(DeviceStatus) -> bool,
    ) -> Result<DeviceStatus, PciError> {
        let mut last = DeviceStatus::RESET;
        for attempt in 0..self.poll.attempts {
            last = self.status();
            if last.contains(DeviceStatus::DEVICE_NEEDS_RESET) {
                return Err(PciError::NeedsReset { status: last });
            }
            if done(last) {
                return Ok(last);
            }
            if attempt >= self.poll.spins {
                std::thread::sleep(self.poll.interval);
            } else {
                std::thread::yield_now();
            }
        }
        Err(PciError::Timeout {
            what,
            attempts: self.poll.attempts,
            status: last,
        })
    }
}
