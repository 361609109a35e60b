//! The virtio capability list in PCI configuration space, and a driver that finds every region
//! through it rather than through fixed offsets.

use std::sync::Arc;

use virtio_lm_pci::layout::{self, VirtioCap, FIRST_CAP};
use virtio_lm_pci::testing::*;
use virtio_lm_pci::{discover, PciError, PciTransport, QueueSetup, Region};
use virtio_lm_queue::BufferSpec;
use virtio_lm_spec::pci::{
    PciCap, PciNotifyCap, PCI_CAP_ID_VNDR, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_DEVICE_CFG,
    VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_PCI_CAP_NOTIFY_CFG,
};
use virtio_lm_spec::{Feature, Profile};
use zerocopy::FromBytes;

/// The configuration space of an rng function: vendor 0x1af4, device 0x1040 + 4, the
/// capability-list status bit, revision 1, and four vendor capabilities linked from 0x34 —
/// common (68 bytes at 0x0000), notify (at 0x3000, multiplier 4, one 4-byte slot per queue),
/// ISR (1 byte at 0x1000), device-specific (at 0x2000) — all in BAR 0, identical to
/// `capabilities()`.
#[test]
fn capability_list_describes_every_region() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    let space = f.config_space();
    assert_eq!(u16::from_le_bytes([space[0], space[1]]), 0x1af4);
    assert_eq!(u16::from_le_bytes([space[2], space[3]]), 0x1044);
    assert_ne!(space[6] & 0x10, 0);
    assert!(space[8] >= 1);
    let mut found = Vec::new();
    let mut at = usize::from(space[0x34]);
    while at != 0 {
        assert_eq!(space[at], PCI_CAP_ID_VNDR);
        let cap = PciCap::read_from_bytes(&space[at..at + 16]).unwrap();
        let parsed = if cap.cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG {
            assert_eq!(cap.cap_len, 20);
            VirtioCap::Notify(PciNotifyCap::read_from_bytes(&space[at..at + 20]).unwrap())
        } else {
            assert_eq!(cap.cap_len, 16);
            VirtioCap::Plain(cap)
        };
        found.push(parsed);
        at = usize::from(cap.cap_next);
    }
    assert_eq!(found.as_slice(), f.capabilities());
    let summary: Vec<_> = found
        .iter()
        .map(|c| {
            let h = c.header();
            (h.cfg_type, h.bar, h.offset.get(), h.length.get())
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (VIRTIO_PCI_CAP_COMMON_CFG, 0, 0x0000, 68),
            (VIRTIO_PCI_CAP_NOTIFY_CFG, 0, 0x3000, 4),
            (VIRTIO_PCI_CAP_ISR_CFG, 0, 0x1000, 1),
            (VIRTIO_PCI_CAP_DEVICE_CFG, 0, 0x2000, 0x1000),
        ]
    );
    match found[1] {
        VirtioCap::Notify(n) => assert_eq!(n.notify_off_multiplier.get(), 4),
        _ => panic!("second capability is not the notify capability"),
    }
    let regions = discover(&*f).unwrap();
    assert_eq!(regions.device_type(), 4);
    assert_eq!(regions.notify_off_multiplier, 4);
}

/// A function seen through a different configuration space: BAR accesses at `shift` and above
/// go to the function at `offset - shift`.
struct Relocated {
    inner: Arc<dyn PciTransport>,
    space: Vec<u8>,
    shift: u64,
}

impl PciTransport for Relocated {
    fn read(&self, offset: u64, data: &mut [u8]) {
        match offset.checked_sub(self.shift) {
            Some(o) => self.inner.read(o, data),
            None => data.fill(0),
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let Some(o) = offset.checked_sub(self.shift) {
            self.inner.write(o, data);
        }
    }

    fn config_read(&self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        for (i, b) in data.iter_mut().enumerate() {
            if let Some(v) = self.space.get(usize::from(offset) + i) {
                *b = *v;
            }
        }
    }
}

/// Lays `caps` (raw bytes) out from 0x40 behind the function's header, linking `cap_next`.
fn space_with(header: &[u8], caps: &[Vec<u8>]) -> Vec<u8> {
    let mut space = header[..FIRST_CAP].to_vec();
    space.resize(256, 0);
    let mut at = FIRST_CAP;
    space[0x34] = at as u8;
    for (i, cap) in caps.iter().enumerate() {
        let next = at + cap.len();
        space[at..next].copy_from_slice(cap);
        space[at + 1] = if i + 1 < caps.len() { next as u8 } else { 0 };
        at = next;
    }
    space
}

fn shifted(caps: &[VirtioCap], shift: u32) -> Vec<Vec<u8>> {
    caps.iter()
        .map(|c| {
            let mut c = *c;
            let h = match &mut c {
                VirtioCap::Plain(h) => h,
                VirtioCap::Notify(n) => &mut n.cap,
            };
            h.offset.set(h.offset.get() + shift);
            c.to_bytes()
        })
        .collect()
}

/// The driver takes every region from the capability list: with the regions moved to another
/// place in the BAR, a non-virtio capability first and a decoy common capability in another
/// BAR (which the driver cannot reach and skips), it initialises the device and completes a
/// buffer through the moved registers and notify address.
#[test]
fn driver_finds_regions_wherever_the_capabilities_point() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    let shift = 0x10_0000u32;
    let power_management = vec![0x01, 0, 0, 0, 0, 0, 0, 0];
    let mut decoy = f.capabilities()[0];
    if let VirtioCap::Plain(h) = &mut decoy {
        h.bar = 2;
    }
    let mut caps = vec![power_management, decoy.to_bytes()];
    caps.extend(shifted(f.capabilities(), shift));
    let transport = Arc::new(Relocated {
        inner: f.clone(),
        space: space_with(f.config_space(), &caps),
        shift: u64::from(shift),
    });
    let mut driver = virtio_lm_pci::PciDriver::new(transport, mem.clone(), Profile::Seeds).unwrap();
    let regions = *driver.regions();
    assert_eq!(
        regions.common,
        Region {
            offset: 0x10_0000,
            length: 68
        }
    );
    assert_eq!(regions.notify.offset, 0x10_3000);
    assert_eq!(regions.isr.offset, 0x10_1000);
    driver
        .init(
            features(&[Feature::Version1]),
            &[QueueSetup::new(0, 4, RING)],
        )
        .unwrap();
    assert_eq!(driver.notify_address(0).unwrap(), 0x10_3000);
    driver.submit(0, &[BufferSpec::writable(DATA, 8)]).unwrap();
    assert_eq!(driver.collect_used(0).unwrap().len(), 1);
}

/// Malformed configuration spaces are refused with a clear error: another vendor, a list that
/// loops, a missing notify capability, a notify capability too short for its multiplier, and a
/// common configuration shorter than 64 bytes.
#[test]
fn malformed_capability_lists_are_rejected() {
    let mem = memory();
    let f = counting_function(&mem, 8, false);
    let caps: Vec<Vec<u8>> = f.capabilities().iter().map(|c| c.to_bytes()).collect();
    let check = |space: Vec<u8>| {
        let t = Relocated {
            inner: f.clone(),
            space,
            shift: 0,
        };
        discover(&t).unwrap_err()
    };

    let mut other_vendor = f.config_space().to_vec();
    other_vendor[0] = 0x86;
    assert!(matches!(check(other_vendor), PciError::NotVirtio(_)));

    let mut looping = space_with(f.config_space(), &caps);
    let last = FIRST_CAP + 16 + 20 + 16;
    looping[last + 1] = FIRST_CAP as u8;
    assert!(matches!(check(looping), PciError::BadCapability(_)));

    let without_notify: Vec<Vec<u8>> = caps
        .iter()
        .filter(|c| c[3] != VIRTIO_PCI_CAP_NOTIFY_CFG)
        .cloned()
        .collect();
    assert!(matches!(
        check(space_with(f.config_space(), &without_notify)),
        PciError::MissingCapability(VIRTIO_PCI_CAP_NOTIFY_CFG)
    ));

    let mut short_notify = caps.clone();
    short_notify[1].truncate(16);
    short_notify[1][2] = 16;
    assert!(matches!(
        check(space_with(f.config_space(), &short_notify)),
        PciError::BadCapability(_)
    ));

    let mut short_common = caps.clone();
    short_common[0][12] = 32;
    assert!(matches!(
        check(space_with(f.config_space(), &short_common)),
        PciError::BadCapability(_)
    ));
    assert_eq!(layout::capabilities(3)[1].header().length.get(), 12);
}
