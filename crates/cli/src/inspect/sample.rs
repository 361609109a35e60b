//! `inspect --sample blk|net`: a real device context from a real device, for a first look at the
//! format without a running VM. The device type is built as a VMM would build it (blk on a
//! temporary 1 MiB image, net on a loopback UDP tunnel), wrapped in a [`DeviceCore`], initialised
//! as a driver would (features, queues, DRIVER_OK), stopped by the driver — DEVICE_STOPPED
//! (seed 000) under the `seeds` profile, SUSPEND (seed 003) under `v1.4`, which has no
//! DEVICE_STOPPED — and saved.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use virtio_lm_device::context::encode;
use virtio_lm_device::{CoreOptions, DeviceCore, InterruptCounter, VirtioDevice};
use virtio_lm_devices::{Blk, BlkOptions, Net, NetOptions};
use virtio_lm_queue::{QueueConfig, RingFeatures, RingKind};
use virtio_lm_spec::{DeviceStatus, Feature, Profile};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::SampleKind;

type Mem = GuestMemoryMmap<()>;

/// Guest memory of the sample: the rings of up to 15 queues, 64 KiB apart from 64 KiB on.
const MEM_SIZE: usize = 1 << 20;
const QUEUE_STRIDE: u64 = 0x1_0000;

/// The MAC address of the sample net device (locally administered).
const SAMPLE_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

/// How long the sample waits for its device to present the stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The encoded context of a sample device of `kind` under `profile`, on a split ring or (with
/// `packed`) a packed one.
pub fn build(kind: SampleKind, profile: Profile, packed: bool) -> anyhow::Result<Vec<u8>> {
    let mem =
        Arc::new(Mem::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).context("sample guest memory")?);
    let device: Box<dyn VirtioDevice<Mem>> = match kind {
        SampleKind::Blk => Box::new(blk()?),
        SampleKind::Net => Box::new(net()?),
    };
    let options = CoreOptions {
        profile,
        features: transport_features(profile),
        ..CoreOptions::default()
    };
    let irq = Arc::new(InterruptCounter::default());
    let mut core = DeviceCore::new(device, mem, irq, options).context("building the core")?;
    start(&mut core, packed)?;
    stop(&mut core, profile)?;
    let context = core.save_context().context("saving the context")?;
    encode(&context).context("encoding the context")
}

/// The ring and migration features the sample offers: [`CoreOptions::default`]'s, less those
/// the profile does not number.
fn transport_features(profile: Profile) -> Vec<Feature> {
    CoreOptions::default()
        .features
        .into_iter()
        .filter(|f| profile.offers(*f))
        .collect()
}

/// A blk device on a fresh 1 MiB image, unlinked once open (the device keeps it open).
fn blk() -> anyhow::Result<Blk> {
    let path = crate::unique_temp_path("virtio-lm-sample").with_extension("img");
    std::fs::write(&path, vec![0u8; 1 << 20])
        .with_context(|| format!("creating the sample image {}", path.display()))?;
    let blk = Blk::open(BlkOptions::new(&path));
    let _ = std::fs::remove_file(&path);
    blk.context("opening the sample blk device")
}

/// A net device whose tunnel runs between two loopback ports.
fn net() -> anyhow::Result<Net> {
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let peer = UdpSocket::bind(loopback).context("binding the sample tunnel's peer")?;
    let remote = peer.local_addr().context("sample peer address")?;
    Net::new(NetOptions::new(SAMPLE_MAC, loopback, remote))
        .context("starting the sample net device")
}

/// Initialisation as a driver does it: every offered feature (the packed ring only if
/// `packed`), every queue at its maximum size, DRIVER_OK.
fn start(core: &mut DeviceCore<Mem>, packed: bool) -> anyhow::Result<()> {
    let profile = core.profile();
    let mask = |f| profile.mask(f).unwrap_or(0);
    let mut features = core.device_features();
    if !packed {
        features &= !mask(Feature::RingPacked);
    }
    let setup = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
    core.write_status(DeviceStatus::ACKNOWLEDGE);
    core.write_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    core.set_driver_features(features);
    core.write_status(setup);
    if core.status() != setup {
        bail!("the sample device refused features {features:#x}");
    }
    let kind = if packed {
        RingKind::Packed
    } else {
        RingKind::Split
    };
    let ring = RingFeatures {
        event_idx: features & mask(Feature::EventIdx) != 0,
        indirect_desc: features & mask(Feature::IndirectDesc) != 0,
    };
    for index in 0..core.num_queues() {
        let size = core.queue(index).map_or(0, |q| q.max_size);
        let at = QUEUE_STRIDE * (u64::from(index) + 1);
        if at + QUEUE_STRIDE > MEM_SIZE as u64 {
            bail!("the sample device has more queues than its guest memory holds");
        }
        let (config, _) = QueueConfig::contiguous(kind, size, GuestAddress(at), ring);
        core.write_queue(index, |regs| regs.program(&config));
    }
    core.write_status(setup | DeviceStatus::DRIVER_OK);
    if core.status() != setup | DeviceStatus::DRIVER_OK {
        bail!("the sample device did not start: {:?}", core.last_error());
    }
    Ok(())
}

/// The driver stops the device — DEVICE_STOPPED, or SUSPEND where the profile has no
/// DEVICE_STOPPED — and re-reads the status until the device presents it.
fn stop(core: &mut DeviceCore<Mem>, profile: Profile) -> anyhow::Result<()> {
    let running = core.status();
    let (write, want) = if profile.status_bit(DeviceStatus::DEVICE_STOPPED).is_some() {
        let stopped = running | DeviceStatus::DEVICE_STOPPED;
        (stopped, stopped)
    } else {
        let presented = (running - DeviceStatus::DRIVER_OK) | DeviceStatus::SUSPEND;
        (running | DeviceStatus::SUSPEND, presented)
    };
    core.write_status(write);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while core.status() != want {
        if Instant::now() > deadline {
            bail!("the sample device never presented {want:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}
