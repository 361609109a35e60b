//! The rig the split and packed unit tests share: guest memory holding one ring, the driver model
//! that fills it and the device queue under test.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::{
    BufferSpec, DeviceQueue, DriverError, PackedDriver, PackedQueue, QueueConfig, RingFeatures,
    RingKind, SplitDriver, SplitQueue,
};

pub(crate) type Mem = GuestMemoryMmap<()>;

/// A ring format as its tests see it: its driver and device types and their guest memory.
pub(crate) trait Format {
    type Driver;
    type Device: DeviceQueue;
    const KIND: RingKind;
    /// Guest memory size of the format's tests (the packed tests place 32768-entry rings).
    const MEM_SIZE: usize;
    fn driver(config: QueueConfig, mem: &Mem) -> Result<Self::Driver, DriverError>;
}

/// Declares a format marker type and its [`Format`] impl.
macro_rules! ring_format {
    ($(#[$doc:meta])* $name:ident: $driver:ident, $device:ident, $kind:ident, $mem_size:expr) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl Format for $name {
            type Driver = $driver;
            type Device = $device;
            const KIND: RingKind = RingKind::$kind;
            const MEM_SIZE: usize = $mem_size;
            fn driver(config: QueueConfig, mem: &Mem) -> Result<$driver, DriverError> {
                $driver::new(config, mem)
            }
        }
    };
}

ring_format!(
    /// The split format.
    Split: SplitDriver, SplitQueue, Split, 0x10_0000
);
ring_format!(
    /// The packed format.
    Packed: PackedDriver, PackedQueue, Packed, 0x20_0000
);

/// One ring at 0x1000 in guest memory, with its driver and its device.
pub(crate) struct Rig<F: Format> {
    pub(crate) mem: Mem,
    pub(crate) config: QueueConfig,
    pub(crate) driver: F::Driver,
    pub(crate) device: F::Device,
}

impl<F: Format> Rig<F> {
    /// A ring of `size` entries with INDIRECT_DESC and without EVENT_IDX.
    pub(crate) fn new(size: u16) -> Self {
        Self::with(size, false, true)
    }

    /// A ring of `size` entries with the given features.
    pub(crate) fn with(size: u16, event_idx: bool, indirect_desc: bool) -> Self {
        Self::in_memory(F::MEM_SIZE, size, event_idx, indirect_desc)
    }

    /// [`Self::with`] in `mem_size` bytes of guest memory.
    pub(crate) fn in_memory(
        mem_size: usize,
        size: u16,
        event_idx: bool,
        indirect_desc: bool,
    ) -> Self {
        let mem = Mem::from_ranges(&[(GuestAddress(0), mem_size)]).unwrap();
        let features = RingFeatures {
            event_idx,
            indirect_desc,
        };
        let (config, _) = QueueConfig::contiguous(F::KIND, size, GuestAddress(0x1000), features);
        let driver = F::driver(config, &mem).unwrap();
        let device = F::Device::new(config, &mem).unwrap();
        Self {
            mem,
            config,
            driver,
            device,
        }
    }
}

/// A 0x100-byte buffer at `addr`.
pub(crate) fn buffer(addr: u64, writable: bool) -> BufferSpec {
    if writable {
        BufferSpec::writable(addr, 0x100)
    } else {
        BufferSpec::readable(addr, 0x100)
    }
}
