//! A guest driver's own state as data: what [`PciDriver`] knows that is not in guest memory or
//! in the device (negotiated features, queue layout, each ring's bookkeeping and the buffers
//! outstanding), so a guest can carry its driver to another process — the counterpart of the
//! device context on the guest's side. Restoring it checks everything before the driver is
//! built: it is input from a migration stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_lm_queue::{BufferSpec, RingDriver};
use virtio_lm_spec::Profile;
use vm_memory::{GuestAddress, GuestMemory};

use super::caps::discover;
use super::ring::DriverQueue;
use super::types::QueueSetup;
use super::PciDriver;
use crate::error::PciError;
use crate::transport::PciTransport;

/// One queue's set-up and bookkeeping.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueBookkeeping {
    /// Queue index.
    pub index: u16,
    /// Entries.
    pub size: u16,
    /// Where the ring starts.
    pub base: u64,
    /// Its MSI-X vector.
    pub msix_vector: u16,
    /// `queue_notify_off` as the device reported it.
    pub notify_off: u16,
    /// The ring driver (present once the queue was set up).
    pub ring: Option<RingDriver>,
    /// Buffers made available and not yet used, by chain id.
    pub outstanding: Vec<(u16, Vec<BufferSpec>)>,
}

/// A [`PciDriver`]'s state (see the module documentation).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DriverState {
    /// Features asked for.
    pub wanted: u64,
    /// Features negotiated.
    pub features: u64,
    /// The configuration-change MSI-X vector.
    pub config_vector: u16,
    /// Every queue set up, in set-up order.
    pub queues: Vec<QueueBookkeeping>,
}

impl<M: GuestMemory> PciDriver<M> {
    /// The driver's state (see [`DriverState`]).
    pub fn driver_state(&self) -> DriverState {
        let queues = self
            .setups
            .iter()
            .map(|setup| {
                let queue = self.queues.get(&setup.index);
                QueueBookkeeping {
                    index: setup.index,
                    size: setup.size,
                    base: setup.base.0,
                    msix_vector: setup.msix_vector,
                    notify_off: queue.map_or(0, |q| q.notify_off),
                    ring: queue.map(|q| q.ring.clone()),
                    outstanding: queue
                        .map(|q| q.outstanding.iter().map(|(k, v)| (*k, v.clone())).collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        DriverState {
            wanted: self.wanted,
            features: self.features,
            config_vector: self.config_vector,
            queues,
        }
    }

    /// A driver continuing from `state` over the function behind `transport` with rings in
    /// `mem`, as after [`Self::migrate_to`]: no register is written. Every ring is checked
    /// against `mem` and for consistency, queue indices must be unique and each ring must be
    /// the one its set-up describes; nothing is built otherwise.
    pub fn from_state(
        transport: Arc<dyn PciTransport>,
        mem: Arc<M>,
        profile: Profile,
        state: DriverState,
    ) -> Result<Self, PciError> {
        let regions = discover(&*transport)?;
        let mut setups = Vec::with_capacity(state.queues.len());
        let mut queues = BTreeMap::new();
        for q in state.queues {
            if setups.iter().any(|s: &QueueSetup| s.index == q.index) {
                return Err(PciError::BadDriverState("a queue is listed twice"));
            }
            setups.push(QueueSetup {
                index: q.index,
                size: q.size,
                base: GuestAddress(q.base),
                msix_vector: q.msix_vector,
                state: None,
            });
            let Some(ring) = q.ring else { continue };
            ring.check_restored(&*mem)?;
            let config = ring.config();
            if config.size != q.size || config.desc_table.0 != q.base {
                return Err(PciError::BadDriverState(
                    "a ring is not where its set-up says",
                ));
            }
            queues.insert(
                q.index,
                DriverQueue {
                    index: q.index,
                    notify_off: q.notify_off,
                    ring,
                    outstanding: q.outstanding.into_iter().collect(),
                },
            );
        }
        let mut driver = Self::new(transport, mem, profile)?;
        driver.regions = regions;
        driver.wanted = state.wanted;
        driver.features = state.features;
        driver.config_vector = state.config_vector;
        driver.setups = setups;
        driver.queues = queues;
        Ok(driver)
    }
}
