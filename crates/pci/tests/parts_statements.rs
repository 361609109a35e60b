//! virtio 1.4 "Device parts" statements about a stopped member's notifications, power
//! management, and commands arriving during an FLR (spec-decisions §18, §29).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use virtio_lm_device::testing::CountingDevice;
use virtio_lm_device::{DeviceError, QueueAccess, VirtioDevice};
use virtio_lm_pci::admin::{AdminClient, AdminCommand, AdminResult, OwnerFunction};
use virtio_lm_pci::testing::*;
use virtio_lm_pci::{PciTransport, VirtioPciFunction};
use virtio_lm_spec::admin::opcode::v1_4;
use virtio_lm_spec::admin::{group_type, status, DevMode};
use virtio_lm_spec::pci::offset;
use virtio_lm_spec::DeviceStatus;

fn generation(function: &VirtioPciFunction<Mem>) -> u8 {
    let mut b = [0u8; 1];
    function.read(offset::CONFIG_GENERATION as u64, &mut b);
    b[0]
}

/// Member 1 of a v1.4 owner with a GET object, its guest driver's first buffer used; the
/// owner and guest are returned to stay alive with the member.
fn member_1_running() -> (
    OwnerFunction<Mem>,
    AdminClient<Mem>,
    V14Guest,
    Arc<VirtioPciFunction<Mem>>,
) {
    let (owner, client) = v14_with_get_object(1, 0);
    let member = owner.member(1).unwrap();
    let mut guest = V14Guest::new(member.clone());
    guest.submit(0x8000, 4);
    assert_eq!(guest.collect(), 1);
    (owner, client, guest, member)
}

/// 1.4 "Device parts", any transport, when stopped: the device "MUST NOT send
/// config-change or vq notifications". A device-side configuration change made while the
/// member is stopped is neither applied (the generation stays) nor notified; on resume it is
/// applied and notified exactly once (spec-decisions §17: stopped is the core's Freeze).
#[test]
fn no_config_change_notification_while_stopped_and_one_after_resume() {
    let (_owner, mut client, _guest, member) = member_1_running();
    client.dev_mode_stopped(1, true).unwrap();
    let before = generation(&member);
    let notified = member.interrupts().config_notifications();
    member.core().lock().unwrap().change_config(|_| {});
    member.core().lock().unwrap().change_config(|_| {});
    assert_eq!(member.interrupts().config_notifications(), notified);
    assert_eq!(generation(&member), before);
    client.dev_mode_stopped(1, true).unwrap();
    assert_eq!(member.interrupts().config_notifications(), notified);

    client.dev_mode_stopped(1, false).unwrap();
    assert_eq!(member.interrupts().config_notifications(), notified + 1);
    assert_eq!(generation(&member), before.wrapping_add(1));
    client.dev_mode_stopped(1, false).unwrap();
    assert_eq!(member.interrupts().config_notifications(), notified + 1);
}

/// 1.4 "Device parts", SR-IOV, when stopped: the device "MUST NOT generate PME"; and
/// DEV_MODE_SET or DEV_PARTS_SET arriving during "a PM transition" is answered after it
/// completes. Not modelled: no v1.4 owner or member has a PCI power-management capability
/// (id 0x01), so there is no PME and no power-management transition. This checks that claim;
/// a PM capability added later fails it.
#[test]
fn v1_4_functions_have_no_power_management() {
    let owner = v14_owner(2);
    for function in [
        owner.function().clone(),
        owner.member(1).unwrap(),
        owner.member(2).unwrap(),
    ] {
        let ids = capability_ids(&function);
        assert!(ids.contains(&0x09), "vendor capabilities walked: {ids:?}");
        assert!(
            !ids.contains(&0x01),
            "a power-management capability: {ids:?}"
        );
    }
}

/// 1.4 "Device parts", SR-IOV, when stopped: the device "MUST behave the same for
/// PCI-architected interfaces" and "MUST answer PCI reads with valid values". The member's PCI
/// configuration space (header and capability list, which the hypervisor saves itself) reads
/// the same while stopped as while running, and so do its common-configuration registers.
#[test]
fn pci_interfaces_read_the_same_while_stopped() {
    let (_owner, mut client, _guest, member) = member_1_running();
    let registers = |f: &VirtioPciFunction<Mem>| {
        let mut b = [0u8; 64];
        f.read(0, &mut b);
        b
    };
    let (space, common) = (*member.config_space(), registers(&member));
    client.dev_mode_stopped(1, true).unwrap();
    assert_eq!(*member.config_space(), space);
    assert_eq!(registers(&member), common);
    client.dev_mode_stopped(1, false).unwrap();
}

/// A counting device whose reset, once armed, waits for a release: an FLR in progress.
struct SlowReset {
    inner: CountingDevice,
    armed: Arc<AtomicBool>,
    started: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl<M: vm_memory::GuestMemory + ?Sized> VirtioDevice<M> for SlowReset {
    fn device_type(&self) -> u32 {
        VirtioDevice::<M>::device_type(&self.inner)
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        VirtioDevice::<M>::queue_max_sizes(&self.inner)
    }

    fn config_len(&self) -> usize {
        VirtioDevice::<M>::config_len(&self.inner)
    }

    fn process_queue(
        &mut self,
        index: u16,
        queue: &mut QueueAccess<'_, M>,
    ) -> Result<(), DeviceError> {
        VirtioDevice::<M>::process_queue(&mut self.inner, index, queue)
    }

    fn reset(&mut self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.started.store(true, Ordering::SeqCst);
            // Only a hang reaches the deadline.
            wait_until(Duration::from_secs(60), || {
                self.release.load(Ordering::SeqCst)
            });
            self.log.lock().unwrap().push("reset complete");
        }
    }
}

/// 1.4 "Device parts": DEV_MODE_SET (and DEV_PARTS_SET) arriving during an FLR "MUST respond
/// after it completes". The FLR runs under the member's lock, which every member command takes
/// first, so a DEV_MODE_SET sent while the FLR is in progress is answered after it: the answer
/// follows the FLR's completion, succeeds, and leaves the reset member stopped.
#[test]
fn dev_mode_set_during_an_flr_is_answered_after_it() {
    let armed = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let (a, s, r, l) = (armed.clone(), started.clone(), release.clone(), log.clone());
    let owner = Arc::new(v14_owner_of(
        1,
        Box::new(move |_| {
            let device = SlowReset {
                inner: CountingDevice::new(1 << 16, 16),
                armed: a.clone(),
                started: s.clone(),
                release: r.clone(),
                log: l.clone(),
            };
            VirtioPciFunction::with_device(Box::new(device), memory(), v14_options(), 2, false)
        }),
    ));
    let _client = v14_client(&owner);
    let member = owner.member(1).unwrap();
    let mut guest = V14Guest::new(member.clone());
    guest.submit(0x8000, 4);
    assert_eq!(guest.collect(), 1);

    armed.store(true, Ordering::SeqCst);
    let flr = std::thread::spawn(move || member.function_level_reset());
    assert!(wait_until(Duration::from_secs(60), || started.load(Ordering::SeqCst)));
    let (o, l) = (owner.clone(), log.clone());
    let stop = std::thread::spawn(move || {
        let cmd = AdminCommand::new(v1_4::DEV_MODE_SET, group_type::SRIOV, 1, vec![1]);
        let written = o.execute_direct(&cmd.to_bytes(), 8);
        l.lock().unwrap().push("answered");
        AdminResult::decode(&written).status
    });
    release.store(true, Ordering::SeqCst);
    flr.join().unwrap();
    assert_eq!(stop.join().unwrap(), status::OK);
    assert_eq!(*log.lock().unwrap(), ["reset complete", "answered"]);
    let member = owner.member(1).unwrap();
    let mut core = member.core().lock().unwrap();
    assert_eq!(core.status(), DeviceStatus::RESET);
    assert_eq!(core.admin_mode(), DevMode::Freeze);
}
