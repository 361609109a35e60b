//! [`VirtioDevice`] for [`Blk`]: features, configuration space, the request and completion
//! paths, quiescing, reset, and the seam to the typed state of `state.rs`. The design is in
//! the parent module.

use std::time::{Duration, Instant};

use virtio_lm_device::{DeviceError, Handover, QueueAccess, Quiesce, QuiesceMode, VirtioDevice};
use vm_memory::GuestMemory;

use super::config::{self, features, VIRTIO_ID_BLOCK};
use super::{Blk, QueueWork, RESET_WAIT};

impl<M: GuestMemory + ?Sized> VirtioDevice<M> for Blk {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn device_features(&self) -> u64 {
        let mut f = features::SIZE_MAX
            | features::SEG_MAX
            | features::BLK_SIZE
            | features::FLUSH
            | features::CONFIG_WCE;
        if self.values.read_only {
            f |= features::RO;
        } else {
            f |= features::DISCARD | features::WRITE_ZEROES;
        }
        if self.values.num_queues > 1 {
            f |= features::MQ;
        }
        f
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![self.queue_size; self.queues.len()]
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let bytes = self.values.bytes();
        virtio_lm_device::read_config_bytes(&bytes, offset, data);
    }

    /// Only `writeback` is writable (VIRTIO_BLK_F_CONFIG_WCE); values other than 0 and 1 are
    /// ignored, as are writes to every other field.
    fn write_config(&mut self, offset: usize, data: &[u8]) {
        let at = config::offset::WRITEBACK;
        if let Some(&value) = at.checked_sub(offset).and_then(|i| data.get(i)) {
            if value <= 1 {
                self.values.writeback = value;
            }
        }
    }

    fn activate(&mut self, negotiated: u64) -> Result<(), DeviceError> {
        self.features = negotiated;
        // virtio spec 5.2.5 (device initialization): "If VIRTIO_BLK_F_CONFIG_WCE is negotiated
        // but VIRTIO_BLK_F_FLUSH is not, the device MUST initialize writeback to 0."
        if negotiated & features::CONFIG_WCE != 0 && negotiated & features::FLUSH == 0 {
            self.values.writeback = 0;
        }
        Ok(())
    }

    /// Submits every handed-over chain this device does not have in process, oldest first.
    fn adopt_inflight(&mut self, handover: Handover<'_, '_, M>) -> Result<(), DeviceError> {
        let index = handover.index();
        let (chains, queue) = handover.into_parts();
        for chain in chains {
            let known = self
                .queues
                .get(usize::from(index))
                .is_some_and(|w| w.outstanding.contains_key(&chain.id()));
            if !known {
                self.start(index, queue, chain)?;
            }
        }
        Ok(())
    }

    fn process_queue(
        &mut self,
        index: u16,
        queue: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        if usize::from(index) >= self.queues.len() {
            return Ok(());
        }
        self.receive();
        let (mine, others) = std::mem::take(&mut self.ready)
            .into_iter()
            .partition::<Vec<_>, _>(|c| c.queue == index);
        self.ready = others;
        for c in mine {
            self.complete(c, queue)?;
        }
        while let Some(chain) = queue.pop()? {
            self.start(index, queue, chain)?;
        }
        Ok(())
    }

    fn poll(&mut self, queues: &mut [QueueAccess<'_, M>]) -> Result<(), DeviceError> {
        self.receive();
        for c in std::mem::take(&mut self.ready) {
            match QueueAccess::find(queues, c.queue) {
                Some(queue) => self.complete(c, queue)?,
                None => self.ready.push(c),
            }
        }
        Ok(())
    }

    fn quiesce(&mut self, mode: QuiesceMode) -> Quiesce {
        self.receive();
        match mode {
            QuiesceMode::Drain if self.queues.iter().all(|w| w.outstanding.is_empty()) => {
                Quiesce::Done
            }
            QuiesceMode::Drain => Quiesce::Pending,
            QuiesceMode::RecordInflight => {
                if self.cancel_queued() {
                    return Quiesce::Pending;
                }
                self.forget_outstanding();
                Quiesce::Done
            }
        }
    }

    /// Back to the state after `open`: queued requests are cancelled, running ones are waited
    /// for (bounded), and nothing submitted before the reset is ever returned.
    fn reset(&mut self) {
        let deadline = Instant::now() + RESET_WAIT;
        while self.cancel_queued() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        self.forget_outstanding();
        for work in &mut self.queues {
            *work = QueueWork::default();
        }
        self.features = 0;
        self.values.writeback = self.initial_writeback;
    }

    fn config_len(&self) -> usize {
        config::CONFIG_LEN
    }

    virtio_lm_device::persist_seam!();
}
