//! [`VirtioDevice`] for [`Net`]: features, configuration space, the processing entry points,
//! quiescing, reset and the device-specific state. The design is in the parent module.

use std::time::{Duration, Instant};

use virtio_lm_device::{DeviceError, Handover, QueueAccess, Quiesce, QuiesceMode, VirtioDevice};
use vm_memory::GuestMemory;

use super::config::{self, features, VIRTIO_ID_NET};
use super::filter::{MacTable, RxMode, VlanTable};
use super::{Net, Role};

/// How long a draining stop or suspend waits for held transmit frames (a socket that takes
/// nothing) before it leaves them in flight.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);

impl Net {
    /// A stop or suspend ended (or never began): processing as usual.
    fn resume_processing(&mut self) {
        self.quiescing = None;
        self.drain_started = None;
    }

    /// The configuration space bytes.
    fn config_bytes(&self) -> [u8; config::CONFIG_LEN] {
        config::config_space(&self.shared.mac(), self.shared.announcing(), self.max_pairs)
    }

    /// Delivers waiting frames (draining: finishes the frames in process) and retries held
    /// transmit frames.
    fn poll_queues<M: GuestMemory + ?Sized>(
        &mut self,
        accesses: &mut [QueueAccess<'_, M>],
    ) -> Result<(), DeviceError> {
        let start_new = self.quiescing.is_none();
        let draining = self.quiescing == Some(QuiesceMode::Drain);
        for pair in 0..self.data_pairs() {
            let work = if start_new {
                self.rx
                    .get(usize::from(pair))
                    .is_some_and(|rx| !rx.backlog.is_empty())
            } else {
                draining && self.rx_in_process(usize::from(pair))
            };
            if !work {
                continue;
            }
            if let Some(access) = QueueAccess::find(accesses, 2 * pair) {
                self.deliver(pair, access, start_new)?;
            }
        }
        let mut queues: Vec<u16> = self.tx_held.iter().map(|h| h.queue).collect();
        queues.dedup();
        for index in queues {
            if let Some(access) = QueueAccess::find(accesses, index) {
                self.retry_tx(index, access)?;
            }
        }
        Ok(())
    }
}

impl<M: GuestMemory + ?Sized> VirtioDevice<M> for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn device_features(&self) -> u64 {
        let mut f = features::MAC
            | features::STATUS
            | features::CTRL_VQ
            | features::CTRL_RX
            | features::CTRL_RX_EXTRA
            | features::CTRL_VLAN
            | features::GUEST_ANNOUNCE
            | features::CTRL_MAC_ADDR;
        if self.mrg_rxbuf {
            f |= features::MRG_RXBUF;
        }
        if self.max_pairs > 1 {
            f |= features::MQ;
        }
        f
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![self.queue_size; self.num_queues]
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let bytes = self.config_bytes();
        virtio_lm_device::read_config_bytes(&bytes, offset, data);
    }

    /// Every field is read-only with VIRTIO_F_VERSION_1 (the driver changes the address with
    /// MAC ADDR_SET): writes are ignored.
    fn write_config(&mut self, _offset: usize, _data: &[u8]) {}

    /// Keeps the control queue state (a restored device is activated after `restore_state`).
    fn activate(&mut self, negotiated: u64) -> Result<(), DeviceError> {
        self.features = negotiated;
        let guest_announce = features::GUEST_ANNOUNCE | features::CTRL_VQ;
        self.shared
            .set_guest_announce(negotiated & guest_announce == guest_announce);
        for rx in &mut self.rx {
            rx.held.clear();
        }
        self.tx_held.clear();
        self.backend.set_tx_blocked(false);
        self.resume_processing();
        self.resteer();
        Ok(())
    }

    /// Transmit chains are sent, receive chains held for the next frames, control commands
    /// executed (see the module documentation).
    fn adopt_inflight(&mut self, handover: Handover<'_, '_, M>) -> Result<(), DeviceError> {
        let index = handover.index();
        let (chains, queue) = handover.into_parts();
        self.resume_processing();
        match self.role(index) {
            Role::Rx(pair) => self.adopt_rx(pair, chains, queue),
            Role::Tx(pair) => self.adopt_tx(index, pair, chains, queue),
            Role::Ctrl => {
                for chain in chains {
                    self.control_chain(&chain, queue)?;
                }
                Ok(())
            }
            Role::Unused => {
                for chain in chains {
                    queue.add_used(chain.id(), 0)?;
                }
                Ok(())
            }
        }
    }

    fn process_queue(
        &mut self,
        index: u16,
        queue: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        if usize::from(index) >= self.num_queues {
            return Ok(());
        }
        self.resume_processing();
        self.pull();
        match self.role(index) {
            Role::Rx(pair) => self.deliver(pair, queue, true),
            Role::Tx(pair) => self.transmit(index, pair, queue),
            Role::Ctrl => {
                while let Some(chain) = queue.pop()? {
                    self.control_chain(&chain, queue)?;
                }
                Ok(())
            }
            // A queue the negotiated features give no role: its buffers are returned unused
            // (the core processes a queue until nothing is available).
            Role::Unused => {
                while let Some(chain) = queue.pop()? {
                    queue.add_used(chain.id(), 0)?;
                }
                Ok(())
            }
        }
    }

    fn poll(&mut self, queues: &mut [QueueAccess<'_, M>]) -> Result<(), DeviceError> {
        self.pull();
        self.poll_queues(queues)
    }

    /// Drain: `Pending` until `poll` has sent every held transmit frame and finished every
    /// receive frame in process; after [`DRAIN_LIMIT`] what is left stays in flight instead.
    /// Receive buffers held with no frame stay in flight. Record in-flight: everything held
    /// stays in flight at once.
    fn quiesce(&mut self, mode: QuiesceMode) -> Quiesce {
        self.quiescing = Some(mode);
        if mode == QuiesceMode::Drain {
            let started = *self.drain_started.get_or_insert_with(Instant::now);
            let busy =
                !self.tx_held.is_empty() || (0..self.rx.len()).any(|pair| self.rx_in_process(pair));
            if busy && started.elapsed() < DRAIN_LIMIT {
                return Quiesce::Pending;
            }
        }
        self.forget_tx_held();
        self.forget_rx_held();
        Quiesce::Done
    }

    /// Back to the state after `new`: control state to its defaults, frames waiting or held
    /// dropped (the driver gave their buffers up).
    fn reset(&mut self) {
        self.features = 0;
        self.mode = RxMode::default();
        self.macs = MacTable::default();
        self.vlans = VlanTable::default();
        self.pairs = 1;
        self.shared.set_mac(self.initial_mac);
        self.shared.set_announcing(false);
        self.shared.set_guest_announce(false);
        self.steering.clear();
        let dropped: usize = self.rx.iter().map(|rx| rx.backlog.len()).sum();
        self.stats.add_rx_discarded(dropped as u64);
        for rx in &mut self.rx {
            *rx = Default::default();
        }
        self.tx_held.clear();
        self.backend.set_tx_blocked(false);
        self.resume_processing();
        if let Some(tap) = &self.tap {
            tap.reset();
        }
    }

    fn config_len(&self) -> usize {
        config::CONFIG_LEN
    }

    virtio_lm_device::persist_seam!();
}
