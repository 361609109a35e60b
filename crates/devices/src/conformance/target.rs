//! What the checks run against: an SR-IOV owner with two members of one device type, its
//! admin client, and the pieces a check needs besides the driver side (guest memory, FLR).

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use virtio_lm_device::{CoreOptions, VirtioDevice};
use virtio_lm_pci::admin::{AdminClient, AdminClientConfig, OwnerFunction, OwnerOptions};
use virtio_lm_pci::{PciDriver, PciTransport, QueueSetup, VirtioPciFunction};
use virtio_lm_spec::{Feature, Profile};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::blk::BlkParts;
use crate::net::NetParts;
use crate::{Blk, BlkOptions, CountingEntropy, Net, NetOptions, Rng};

/// Guest memory of the targets.
pub type Mem = GuestMemoryMmap<()>;

const MEM_SIZE: usize = 0x2_0000;
/// Queue 0's ring in a member's memory.
pub(super) const RING: u64 = 0x1000;
/// Data buffers in a member's memory.
pub(super) const DATA: u64 = 0x8000;

/// Builds member `vf`'s device type.
type DeviceMaker = Box<dyn Fn(u16) -> Result<Box<dyn VirtioDevice<Mem>>, String> + Send>;

/// Which device type the members are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// virtio-blk over a temporary 1 MiB image.
    Blk,
    /// virtio-net over a loopback UDP tunnel.
    Net,
    /// virtio-rng with a counting source.
    Rng,
}

impl DeviceKind {
    /// `"blk"`, `"net"` or `"rng"`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Blk => "blk",
            DeviceKind::Net => "net",
            DeviceKind::Rng => "rng",
        }
    }
}

/// A temporary image, removed on drop.
struct Image(PathBuf);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The device under test: an owner with members 1 and 2, and its driver.
pub struct Target {
    /// The owner.
    pub owner: OwnerFunction<Mem>,
    /// The owner's driver.
    pub client: AdminClient<Mem>,
    /// The profile.
    pub profile: Profile,
    /// The members' device type.
    pub kind: DeviceKind,
    _image: Option<Image>,
    _peer: Option<UdpSocket>,
}

fn memory() -> Result<Arc<Mem>, String> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// The transport features a member offers under `profile`.
pub(super) fn member_options(profile: Profile) -> CoreOptions {
    let features = match profile {
        Profile::Seeds => CoreOptions::default().features,
        Profile::V1_4 => vec![
            Feature::Version1,
            Feature::EventIdx,
            Feature::Suspend,
            Feature::RingReset,
        ],
    };
    CoreOptions {
        profile,
        features,
        ..CoreOptions::default()
    }
}

impl Target {
    /// An owner under `profile` whose two members are `kind` devices.
    pub fn build(profile: Profile, kind: DeviceKind) -> Result<Self, String> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut image = None;
        let mut peer = None;
        let make: DeviceMaker = match kind {
            DeviceKind::Rng => Box::new(|vf| {
                let source = CountingEntropy::new(u64::from(vf) << 16);
                Ok(Box::new(Rng::new(Box::new(source), 16)) as Box<dyn VirtioDevice<Mem>>)
            }),
            DeviceKind::Blk => {
                let path = std::env::temp_dir().join(format!(
                    "virtio-lm-conform-{}-{seq}.img",
                    std::process::id()
                ));
                std::fs::write(&path, vec![0u8; 1 << 20]).map_err(observe)?;
                image = Some(Image(path.clone()));
                Box::new(move |_| {
                    let mut options = BlkOptions::new(&path);
                    options.queue_size = 16;
                    options.backend_threads = 1;
                    Blk::open(options)
                        .map(|b| Box::new(b) as Box<dyn VirtioDevice<Mem>>)
                        .map_err(observe)
                })
            }
            DeviceKind::Net => {
                let sink = UdpSocket::bind("127.0.0.1:0").map_err(observe)?;
                let remote = sink.local_addr().map_err(observe)?;
                peer = Some(sink);
                Box::new(move |_| {
                    let local: SocketAddr = "127.0.0.1:0".parse().map_err(observe)?;
                    let mut options = NetOptions::new([2, 0, 0, 0, 0, 1], local, remote);
                    options.queue_size = 16;
                    Net::new(options)
                        .map(|n| Box::new(n) as Box<dyn VirtioDevice<Mem>>)
                        .map_err(observe)
                })
            }
        };
        let factory = Box::new(move |vf: u16| {
            let device = make(vf).map_err(std::io::Error::other)?;
            let mem = memory().map_err(std::io::Error::other)?;
            VirtioPciFunction::with_device(device, mem, member_options(profile), 2, false)
        });
        let options = OwnerOptions {
            core: CoreOptions {
                profile,
                features: vec![Feature::Version1],
                ..CoreOptions::default()
            },
            ..OwnerOptions::default()
        };
        let owner_device = Rng::new(Box::new(CountingEntropy::new(0)), 8);
        let owner = OwnerFunction::new(Box::new(owner_device), memory()?, options, factory)
            .map_err(observe)?;
        match kind {
            DeviceKind::Blk => owner.set_parts_codec(Box::new(BlkParts)),
            DeviceKind::Net => owner.set_parts_codec(Box::new(NetParts)),
            DeviceKind::Rng => {}
        }
        owner.set_num_vfs(2).map_err(observe)?;
        owner.set_vf_enable(true).map_err(observe)?;
        let mem = owner
            .function()
            .core()
            .lock()
            .map_err(observe)?
            .mem()
            .clone();
        let config = AdminClientConfig::low_memory(Duration::from_secs(60));
        let transport: Arc<dyn PciTransport> = owner.function().clone();
        let client = AdminClient::init(transport, mem, profile, config).map_err(observe)?;
        Ok(Self {
            owner,
            client,
            profile,
            kind,
            _image: image,
            _peer: peer,
        })
    }

    /// A guest driver of member `id`, initialised with VERSION_1 (and, `with`, more) and queue
    /// 0 of 16 at guest address 0x1000.
    pub fn guest(&self, id: u16, with: &[Feature]) -> Result<PciDriver<Mem>, String> {
        let function = self.owner.member(id).ok_or("no such member")?;
        let mem = function.core().lock().map_err(observe)?.mem().clone();
        let transport: Arc<dyn PciTransport> = function;
        let mut driver = PciDriver::new(transport, mem, self.profile).map_err(observe)?;
        let mut wanted = vec![Feature::Version1];
        wanted.extend_from_slice(with);
        let features = self.profile.feature_set(&wanted).map_err(observe)?;
        driver
            .init(features, &[QueueSetup::new(0, 16, RING)])
            .map_err(observe)?;
        Ok(driver)
    }

    /// PCI Function Level Reset of member `id` (the platform's side, not a driver's).
    pub fn flr(&self, id: u16) {
        if let Some(f) = self.owner.member(id) {
            f.function_level_reset();
        }
    }
}

fn observe(e: impl std::fmt::Display) -> String {
    e.to_string()
}
