//! virtio-rng (device id 4): the simplest real device type. One request queue; the device
//! fills each device-writable buffer with random bytes and returns it. It has no feature bits
//! and no configuration space of its own (the [`VirtioDevice`] defaults).

use std::fs::File;
use std::io::Read;

use vm_memory::{Bytes, GuestMemory};

use virtio_lm_device::{DeviceError, QueueAccess, VirtioDevice};
use virtio_lm_queue::DescriptorChain;

/// virtio device id of an entropy source.
pub const VIRTIO_ID_RNG: u32 = 4;

/// Where random bytes come from.
pub trait EntropySource: Send {
    /// Fills `buf`.
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()>;
}

/// The host's `/dev/urandom`.
pub struct HostEntropy(File);

impl HostEntropy {
    /// Opens `/dev/urandom`.
    pub fn open() -> std::io::Result<Self> {
        File::open("/dev/urandom").map(Self)
    }
}

impl EntropySource for HostEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read_exact(buf)
    }
}

/// A reproducible byte stream for tests: byte i is a function of a seed and i.
pub struct CountingEntropy {
    next: u64,
}

impl CountingEntropy {
    /// Starts the stream at `seed`.
    pub fn new(seed: u64) -> Self {
        Self { next: seed }
    }
}

impl EntropySource for CountingEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        for byte in buf {
            *byte = self.next as u8;
            self.next = self.next.wrapping_add(1);
        }
        Ok(())
    }
}

/// The virtio-rng device type.
///
/// ```
/// use std::sync::Arc;
/// use virtio_lm_device::{CoreOptions, DeviceCore, InterruptCounter};
/// use virtio_lm_devices::{CountingEntropy, Rng, VIRTIO_ID_RNG};
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
///
/// let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap());
/// let rng = Rng::new(Box::new(CountingEntropy::new(0)), 64);
/// let irq = Arc::new(InterruptCounter::default());
/// let core = DeviceCore::new(Box::new(rng), mem, irq, CoreOptions::default()).unwrap();
/// assert_eq!(core.device_type(), VIRTIO_ID_RNG);
/// assert_eq!(core.queue(0).unwrap().max_size, 64);
/// ```
pub struct Rng {
    source: Box<dyn EntropySource>,
    queue_size: u16,
    scratch: Vec<u8>,
}

impl Rng {
    /// An rng whose queue holds up to `queue_size` buffers.
    pub fn new(source: Box<dyn EntropySource>, queue_size: u16) -> Self {
        Self {
            source,
            queue_size,
            scratch: Vec::new(),
        }
    }

    /// Fills each device-writable buffer of `chain` from the source; returns the bytes written.
    fn fill<M: GuestMemory + ?Sized>(
        &mut self,
        chain: &DescriptorChain,
        mem: &M,
    ) -> Result<u32, DeviceError> {
        let mut written = 0u32;
        for segment in chain.writable() {
            self.scratch.resize(segment.len as usize, 0);
            self.source
                .fill(&mut self.scratch)
                .map_err(|e| DeviceError::Backend(e.to_string()))?;
            mem.write_slice(&self.scratch, segment.addr)
                .map_err(|e| DeviceError::Backend(e.to_string()))?;
            written += segment.len;
        }
        Ok(written)
    }
}

impl<M: GuestMemory + ?Sized> VirtioDevice<M> for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn process_queue(
        &mut self,
        _index: u16,
        queue: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        queue.complete_each(|chain, mem| self.fill(chain, mem))
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![self.queue_size]
    }

    fn config_len(&self) -> usize {
        0 // virtio-rng has no device-specific configuration
    }
}

#[cfg(test)]
mod tests {
    use virtio_lm_device::testing::{CoreDriver, DATA};
    use vm_memory::{Bytes, GuestAddress};

    use super::{CountingEntropy, Rng};

    /// Each device-writable buffer comes back whole, holding the source's next bytes.
    #[test]
    fn fills_each_buffer_from_the_source() {
        let mut d = CoreDriver::new(Box::new(Rng::new(Box::new(CountingEntropy::new(5)), 16)));
        d.start_default();
        d.offer(2);
        d.core.kick(0);
        let used = d.collect();
        assert_eq!(used.iter().map(|u| u.len).collect::<Vec<_>>(), [0x40, 0x40]);
        for (buffer, first) in [(DATA, 5u8), (DATA + 0x100, 5 + 0x40)] {
            let mut bytes = [0u8; 0x40];
            d.mem.read_slice(&mut bytes, GuestAddress(buffer)).unwrap();
            let expected: Vec<u8> = (0..0x40).map(|i| first.wrapping_add(i)).collect();
            assert_eq!(bytes.to_vec(), expected);
        }
    }
}
