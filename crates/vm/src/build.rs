//! Building a machine's parts: the devices, the SR-IOV owner whose members they become, and
//! the guest drivers a booting guest initialises.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use virtio_lm_device::{CoreOptions, VirtioDevice};
use virtio_lm_devices::blk::config::features as bf;
use virtio_lm_devices::blk::driver::{BlkDriver, BlkDriverConfig};
use virtio_lm_devices::blk::BlkParts;
use virtio_lm_devices::net::config::{ctrl, features as nf};
use virtio_lm_devices::net::pci_driver::{NetPciConfig, NetPciDriver};
use virtio_lm_devices::net::Announcer;
use virtio_lm_devices::net::NetParts;
use virtio_lm_devices::{Blk, BlkOptions, HostEntropy, Net, NetOptions, NetStats, Rng};
use virtio_lm_pci::admin::{DevicePartsCodec, OwnerFunction, OwnerOptions};
use virtio_lm_pci::{PciDriver, VirtioPciFunction};
use virtio_lm_spec::{Feature, Profile};
use vmm_sys_util::eventfd::EventFd;

use crate::ctrl_shadow::CtrlShadow;
use crate::guest::blk::BLOCK_LEN;
use crate::guest::queue_vectors;
use crate::machine::MachineError;
use crate::memory::{GuestRam, VmMemory};
use crate::options::{GuestLayout, MachineOptions, RingFormat};

/// Entries per queue of the guest's blk and net queues.
pub(crate) const QUEUE_SIZE: u16 = 64;

/// A member's device before the owner's factory builds its function, with the eventfd its
/// worker watches besides the kicks, its MSI-X vector count, and its device-type parts codec
/// (the v1.4 profile's owner moves it as device parts).
pub(crate) type PendingMember = (
    Box<dyn VirtioDevice<GuestRam>>,
    Arc<EventFd>,
    u16,
    Box<dyn DevicePartsCodec>,
);

/// What the machine keeps of its net device once the device moved into its function.
pub(crate) struct NetHandles {
    /// Its counters.
    pub(crate) stats: Arc<NetStats>,
    /// The hypervisor's shadow of its control queue (spec-decisions §21).
    pub(crate) shadow: Arc<CtrlShadow>,
    /// Its tunnel's bound address.
    pub(crate) local: SocketAddr,
    /// Announces the device on the destination at Commit.
    pub(crate) announcer: Announcer,
}

/// The devices the options ask for, blk first; and what the machine keeps of the net device.
pub(crate) fn devices(
    options: &MachineOptions,
) -> Result<(Vec<PendingMember>, Option<NetHandles>), MachineError> {
    let mut pending: Vec<PendingMember> = Vec::new();
    let mut handles = None;
    if let Some(path) = &options.blk {
        let blk = Blk::open(BlkOptions {
            num_queues: options.queues,
            queue_size: QUEUE_SIZE,
            ..BlkOptions::new(path)
        })
        .map_err(|e| MachineError::Device(e.to_string()))?;
        let wake = blk.completion_fd();
        let codec = Box::new(BlkParts);
        pending.push((Box::new(blk), wake, options.queues + 1, codec));
    }
    if let Some(endpoints) = options.net {
        let mut net = Net::new(NetOptions {
            queue_pairs: options.queues,
            queue_size: QUEUE_SIZE,
            ..NetOptions::new(options.mac, endpoints.local, endpoints.remote)
        })
        .map_err(|e| MachineError::Device(e.to_string()))?;
        let shadow = Arc::new(CtrlShadow::default());
        net.set_control_tap(shadow.clone());
        handles = Some(NetHandles {
            stats: net.stats(),
            shadow,
            local: net.local_addr(),
            announcer: net.announcer(),
        });
        let wake = net.wake_fd();
        let codec = Box::new(NetParts);
        pending.push((Box::new(net), wake, 2 * options.queues + 2, codec));
    }
    Ok((pending, handles))
}

/// The transport features the devices offer under `profile` (spec-decisions §35): the seeds
/// profile's default set, or under v1.4 the published features without DEVICE_STOP and
/// QUEUE_STATE, which 1.4 does not number, and with RING_RESET.
fn device_features(profile: Profile) -> Vec<Feature> {
    let mut features = CoreOptions::default().features;
    if profile == Profile::V1_4 {
        features.retain(|f| !matches!(f, Feature::DeviceStop | Feature::QueueState));
        features.push(Feature::RingReset);
    }
    features
}

/// The transport features the guest drivers ask for under `profile`, but those in `omits`:
/// VERSION_1, EVENT_IDX, SUSPEND and (packed) RING_PACKED; besides, DEVICE_STOP and
/// QUEUE_STATE under the seeds profile, RING_RESET under v1.4 (spec-decisions §35).
pub(crate) fn transport_features(
    profile: Profile,
    ring: RingFormat,
    omits: &[Feature],
) -> Result<u64, MachineError> {
    let mut wanted = vec![Feature::Version1, Feature::EventIdx, Feature::Suspend];
    match profile {
        Profile::Seeds => wanted.extend([Feature::DeviceStop, Feature::QueueState]),
        Profile::V1_4 => wanted.push(Feature::RingReset),
    }
    if ring == RingFormat::Packed {
        wanted.push(Feature::RingPacked);
    }
    wanted.retain(|f| !omits.contains(f));
    profile
        .feature_set(&wanted)
        .map_err(|e| MachineError::Driver(e.to_string()))
}

/// The owner: an rng device of its own (any type serves; the admin queue is what matters) on
/// host memory, members built from `pending` (VF *n* is `pending[n - 1]`) on guest RAM.
pub(crate) fn owner(
    owner_memory: &VmMemory,
    ram: &Arc<GuestRam>,
    options: &MachineOptions,
    pending: Vec<PendingMember>,
) -> Result<OwnerFunction<GuestRam>, MachineError> {
    let count = u16::try_from(pending.len()).unwrap_or(u16::MAX);
    let ram = ram.clone();
    let profile = options.profile;
    let core = CoreOptions {
        profile,
        features: device_features(profile),
        quiesce_mode: options.quiesce,
    };
    let mut codecs = Vec::new();
    let mut pending: Vec<Option<_>> = pending
        .into_iter()
        .map(|(device, wake, vectors, codec)| {
            codecs.push(codec);
            Some((device, wake, vectors))
        })
        .collect();
    let factory = Box::new(move |vf: u16| {
        let (device, _, vectors) = usize::from(vf)
            .checked_sub(1)
            .and_then(|i| pending.get_mut(i))
            .and_then(Option::take)
            .ok_or_else(|| std::io::Error::other(format!("member {vf} was built already")))?;
        VirtioPciFunction::with_device(device, ram.clone(), core.clone(), vectors, true)
    });
    let entropy = HostEntropy::open()?;
    let device = Box::new(Rng::new(Box::new(entropy), 8));
    let owner_options = match profile {
        Profile::Seeds => OwnerOptions::default(),
        Profile::V1_4 => OwnerOptions {
            core: CoreOptions {
                profile,
                features: vec![Feature::Version1],
                ..CoreOptions::default()
            },
            ..OwnerOptions::default()
        },
    };
    let owner = OwnerFunction::new(device, owner_memory.ram().clone(), owner_options, factory)?;
    for (vf, codec) in (1u64..).zip(codecs) {
        owner.set_member_parts_codec(vf, codec);
    }
    owner.set_num_vfs(count)?;
    owner.set_vf_enable(true)?;
    Ok(owner)
}

/// What a booting guest's drivers set up against: its RAM, the transport features of the ring
/// format, and the machine's options and layout.
pub(crate) struct GuestBoot<'a> {
    pub(crate) ram: &'a Arc<GuestRam>,
    pub(crate) transport: u64,
    pub(crate) options: &'a MachineOptions,
    pub(crate) layout: &'a GuestLayout,
}

impl GuestBoot<'_> {
    /// The register-level driver of `function` and the eventfds of its first `queues` queues.
    fn transport(
        &self,
        function: &Arc<VirtioPciFunction<GuestRam>>,
        queues: u16,
    ) -> Result<(PciDriver<GuestRam>, Vec<Arc<EventFd>>), MachineError> {
        let irqs = queue_vectors(function, queues).map_err(MachineError::Driver)?;
        let pci = PciDriver::new(function.clone(), self.ram.clone(), self.options.profile)?;
        Ok((pci, irqs))
    }

    pub(crate) fn blk_driver(
        &self,
        function: &Arc<VirtioPciFunction<GuestRam>>,
    ) -> Result<BlkDriver<GuestRam>, MachineError> {
        let (transport, options, layout) = (self.transport, self.options, self.layout);
        let config = BlkDriverConfig {
            features: transport | bf::FLUSH | bf::MQ | bf::SEG_MAX | bf::BLK_SIZE,
            num_queues: options.queues,
            queue_size: QUEUE_SIZE,
            rings_at: layout.blk_at,
            max_data: BLOCK_LEN,
        };
        if config.end() > layout.net_rings_at {
            return Err(MachineError::Driver(
                "the blk driver overlaps the net rings".into(),
            ));
        }
        let (pci, irqs) = self.transport(function, options.queues)?;
        BlkDriver::new(pci, config, irqs).map_err(|e| MachineError::Driver(e.to_string()))
    }

    pub(crate) fn net_driver(
        &self,
        function: &Arc<VirtioPciFunction<GuestRam>>,
    ) -> Result<NetPciDriver<GuestRam>, MachineError> {
        let (transport, options, layout) = (self.transport, self.options, self.layout);
        let queues = 2 * options.queues + 1;
        let config = NetPciConfig {
            // CTRL_RX and CTRL_VLAN: the guest may program the receive filter (the status
            // strategy replays it, spec-decisions §21); GUEST_ANNOUNCE: it answers the
            // destination's announcement (spec-decisions §31).
            features: transport
                | nf::MAC
                | nf::MQ
                | nf::CTRL_VQ
                | nf::MRG_RXBUF
                | nf::CTRL_RX
                | nf::CTRL_VLAN
                | nf::GUEST_ANNOUNCE,
            pairs: options.queues,
            queue_size: QUEUE_SIZE,
            rx_buf_len: 2048,
            rings_at: layout.net_rings_at,
            buffers_at: layout.net_buffers_at,
        };
        let (pci, irqs) = self.transport(function, queues)?;
        let mut driver = NetPciDriver::new(pci, config, irqs)
            .map_err(|e| MachineError::Driver(e.to_string()))?;
        if driver.net().buffers_end() > layout.working_set_at {
            return Err(MachineError::Driver(
                "the net buffers overlap the working set".into(),
            ));
        }
        if options.queues > 1 {
            let ack = driver
                .command(
                    ctrl::CLASS_MQ,
                    ctrl::MQ_VQ_PAIRS_SET,
                    &options.queues.to_le_bytes(),
                    Duration::from_secs(5),
                )
                .map_err(|e| MachineError::Driver(e.to_string()))?;
            if ack != ctrl::OK {
                return Err(MachineError::Driver(format!("VQ_PAIRS_SET answered {ack}")));
            }
        }
        Ok(driver)
    }
}
