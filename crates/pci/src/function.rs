//! The virtio-pci function: BAR 0 decoded into the common configuration, ISR, device-specific
//! configuration and notification regions over a shared [`DeviceCore`].

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use virtio_lm_device::{CoreOptions, DeviceCore, VirtioDevice, Worker};
use virtio_lm_spec::admin::DevMode;
use virtio_lm_spec::Feature;
use vm_memory::GuestMemory;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use zerocopy::IntoBytes;

use crate::common::{self, AdminQueues, Selectors, WriteEffect};
use crate::error::PciError;
use crate::interrupts::MsixInterrupts;
use crate::layout::{self, VirtioCap, CONFIG_SPACE_LEN};
use crate::notify::NotificationData;
use crate::pci_cfg::PciCfgWindow;
use crate::transport::PciTransport;

mod registers;

pub use registers::FunctionRegisters;

/// How a driver notification reaches the core.
#[derive(Clone, Debug)]
pub enum KickMode {
    /// The notify write signals queue i's eventfd; a [`Worker`] processes it on its own thread.
    Worker(Vec<Arc<EventFd>>),
    /// The notify write calls [`DeviceCore::kick`] before returning (deterministic tests).
    Direct,
}

impl KickMode {
    /// Worker mode with one fresh non-blocking eventfd per queue.
    pub fn worker(num_queues: u16) -> std::io::Result<Self> {
        (0..num_queues)
            .map(|_| EventFd::new(EFD_NONBLOCK).map(Arc::new))
            .collect::<std::io::Result<_>>()
            .map(Self::Worker)
    }
}

/// Which region of BAR 0 an offset falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    Common(usize),
    Isr,
    Device(usize),
    Notify(u64),
    None,
}

fn region(offset: u64) -> Region {
    let within = |base: u64| {
        offset
            .checked_sub(base)
            .filter(|&o| o < layout::REGION_SIZE)
    };
    if let Some(o) = within(layout::COMMON_OFFSET) {
        Region::Common(o as usize)
    } else if within(layout::ISR_OFFSET) == Some(0) {
        Region::Isr
    } else if let Some(o) = within(layout::DEVICE_OFFSET) {
        Region::Device(o as usize)
    } else if let Some(o) = within(layout::NOTIFY_OFFSET) {
        Region::Notify(o)
    } else {
        Region::None
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn le_value(data: &[u8]) -> Option<u64> {
    match data.len() {
        1 | 2 | 4 | 8 => {
            let mut bytes = [0u8; 8];
            bytes[..data.len()].copy_from_slice(data);
            Some(u64::from_le_bytes(bytes))
        }
        _ => None,
    }
}

/// A virtio-pci function: a register model of BAR 0 over a [`DeviceCore`] shared (behind a
/// mutex) with the device's [`Worker`].
///
/// BAR 0 layout: common configuration at 0x0000 (68 bytes: the 1.4 layout plus the seed 001
/// queue state at 64/66), ISR at 0x1000, device-specific configuration at 0x2000, notifications
/// at 0x3000 (`notify_off_multiplier` 4, `queue_notify_off` = queue index). Interrupts go through
/// [`MsixInterrupts`], which must be the core's [`virtio_lm_device::Interrupts`].
pub struct VirtioPciFunction<M: GuestMemory + Send + Sync + 'static> {
    core: Arc<Mutex<DeviceCore<M>>>,
    interrupts: Arc<MsixInterrupts>,
    kick: KickMode,
    /// Lock order: `selectors`, then `core`.
    selectors: Mutex<Selectors>,
    notifications: Mutex<Vec<Option<NotificationData>>>,
    num_queues: u16,
    caps: Vec<VirtioCap>,
    config_space: [u8; CONFIG_SPACE_LEN],
    /// The last `num` queues are admin queues (an owner function; seed 004).
    admin: Option<AdminQueues>,
    /// The VIRTIO_PCI_CAP_PCI_CFG window, if the function has one.
    pci_cfg: Option<PciCfgWindow>,
}

impl<M: GuestMemory + Send + Sync + 'static> VirtioPciFunction<M> {
    /// Wraps `core`, whose interrupts must be `interrupts` (build the [`MsixInterrupts`] first,
    /// hand a clone to [`DeviceCore::new`], then build the function around both).
    pub fn new(
        core: Arc<Mutex<DeviceCore<M>>>,
        interrupts: Arc<MsixInterrupts>,
        kick: KickMode,
    ) -> Result<Self, PciError> {
        let (num_queues, device_type) = {
            let core = lock(&core);
            (core.num_queues(), core.device_type())
        };
        if interrupts.num_queues() < num_queues {
            return Err(PciError::QueueCountMismatch {
                interrupts: interrupts.num_queues(),
                device: num_queues,
            });
        }
        if let KickMode::Worker(fds) = &kick {
            if fds.len() < usize::from(num_queues) {
                return Err(PciError::QueueCountMismatch {
                    interrupts: fds.len() as u16,
                    device: num_queues,
                });
            }
        }
        let caps = layout::capabilities(num_queues);
        let config_space = layout::config_space(device_type, &caps);
        Ok(Self {
            core,
            interrupts,
            kick,
            selectors: Mutex::new(Selectors::default()),
            notifications: Mutex::new(vec![None; usize::from(num_queues)]),
            num_queues,
            caps,
            config_space,
            admin: None,
            pci_cfg: None,
        })
    }

    /// The same function with a VIRTIO_PCI_CAP_PCI_CFG capability after the others: the driver
    /// can then reach BAR 0 through configuration space ([`PciTransport::config_write`]). Seed
    /// 004 rules it for member devices: writes to it are ignored in Freeze.
    pub fn with_pci_cfg_window(mut self) -> Self {
        if self.pci_cfg.is_some() {
            return self;
        }
        let at = layout::FIRST_CAP
            + self
                .caps
                .iter()
                .map(|c| usize::from(c.header().cap_len))
                .sum::<usize>();
        let device_type = u32::from(
            u16::from_le_bytes([self.config_space[2], self.config_space[3]])
                .wrapping_sub(virtio_lm_spec::pci::VIRTIO_PCI_DEVICE_ID_BASE),
        );
        if let Some(last) = self.caps.last_mut() {
            let header = match last {
                VirtioCap::Plain(cap) => cap,
                VirtioCap::Notify(cap) => &mut cap.cap,
            };
            header.cap_next = at as u8;
        }
        self.config_space = layout::config_space(device_type, &self.caps);
        let cap = layout::pci_cfg_cap();
        if let Some(slot) = self.config_space.get_mut(at..at + cap.len()) {
            slot.copy_from_slice(&cap);
            self.pci_cfg = Some(PciCfgWindow::new(at));
        }
        self
    }

    /// Marks the last `num` queues of the core as admin queues (an owner function): the common
    /// configuration reports them at `admin_queue_index`/`admin_queue_num` (offsets 60/62) and
    /// leaves them out of `num_queues`; they exist for the driver only once VIRTIO_F_ADMIN_VQ
    /// is negotiated.
    pub(crate) fn with_admin_queues(mut self, num: u16) -> Self {
        if num > 0 && num <= self.num_queues {
            self.admin = Some(AdminQueues {
                index: self.num_queues - num,
                num,
            });
        }
        self
    }

    /// The admin queues (first index, number), for an owner function.
    pub fn admin_queues(&self) -> Option<(u16, u16)> {
        self.admin.map(|a| (a.index, a.num))
    }

    /// Configuration-space offset of the VIRTIO_PCI_CAP_PCI_CFG capability, if any.
    pub fn pci_cfg_offset(&self) -> Option<u16> {
        self.pci_cfg.as_ref().map(|w| w.at() as u16)
    }

    /// PCI Function Level Reset: the device is reset as by a driver reset, in every admin mode
    /// (seed 004: PCI architected interfaces work the same in every mode; the admin mode is
    /// kept), and the transport's own registers (MSI-X routing, ISR, selects, the PCI_CFG
    /// window) return to their reset values.
    pub fn function_level_reset(&self) {
        let mut selectors = lock(&self.selectors);
        lock(&self.core).function_level_reset();
        self.interrupts.reset();
        *selectors = Selectors::default();
        lock(&self.notifications).fill(None);
        if let Some(window) = &self.pci_cfg {
            window.reset();
        }
    }

    /// Builds everything around `device`: [`MsixInterrupts`] with `msix_vectors` vectors, the
    /// core, and (for `worker` true) one kick eventfd per queue for a [`Worker`]; otherwise kicks
    /// are direct.
    pub fn with_device(
        device: Box<dyn VirtioDevice<M>>,
        mem: Arc<M>,
        options: CoreOptions,
        msix_vectors: u16,
        worker: bool,
    ) -> Result<Self, PciError> {
        let num_queues = device.queue_max_sizes().len() as u16;
        let interrupts = Arc::new(MsixInterrupts::new(msix_vectors, num_queues)?);
        let core = DeviceCore::new(device, mem, interrupts.clone(), options)?;
        let kick = if worker {
            KickMode::worker(num_queues)?
        } else {
            KickMode::Direct
        };
        Self::new(Arc::new(Mutex::new(core)), interrupts, kick)
    }

    /// The shared device core.
    pub fn core(&self) -> &Arc<Mutex<DeviceCore<M>>> {
        &self.core
    }

    /// The interrupt routing and lines.
    pub fn interrupts(&self) -> &Arc<MsixInterrupts> {
        &self.interrupts
    }

    /// How notifications reach the core.
    pub fn kick_mode(&self) -> &KickMode {
        &self.kick
    }

    /// Starts a [`Worker`] on the kick eventfds (worker mode only).
    pub fn spawn_worker(&self) -> Result<Worker, PciError> {
        match &self.kick {
            KickMode::Worker(fds) => Ok(Worker::spawn(self.core.clone(), fds.clone())?),
            KickMode::Direct => Err(PciError::NoKickEventFds),
        }
    }

    /// The virtio capabilities, linked as they appear in configuration space.
    pub fn capabilities(&self) -> &[VirtioCap] {
        &self.caps
    }

    /// The PCI configuration space (header and capability list).
    pub fn config_space(&self) -> &[u8; CONFIG_SPACE_LEN] {
        &self.config_space
    }

    /// The last notification received for `queue`, as decoded.
    pub fn last_notification(&self, queue: u16) -> Option<NotificationData> {
        lock(&self.notifications)
            .get(usize::from(queue))
            .copied()
            .flatten()
    }

    /// Reads `data.len()` bytes of BAR 0 at `offset`. Unimplemented offsets read 0; reading the
    /// ISR returns and clears it.
    pub fn bar_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match region(offset) {
            Region::Common(off) => {
                let selectors = lock(&self.selectors);
                let snapshot = {
                    let mut core = lock(&self.core);
                    common::snapshot(&mut core, &self.interrupts, &selectors, self.admin)
                };
                let bytes = snapshot.as_bytes();
                if off < bytes.len() {
                    let n = data.len().min(bytes.len() - off);
                    data[..n].copy_from_slice(&bytes[off..off + n]);
                }
            }
            Region::Isr => {
                if let Some(first) = data.first_mut() {
                    *first = self.interrupts.read_isr();
                }
            }
            Region::Device(off) => lock(&self.core).read_config(off, data),
            Region::Notify(_) | Region::None => {}
        }
    }

    /// Writes `data` to BAR 0 at `offset`. Writes to read-only or unimplemented offsets, and
    /// accesses that are not of a field's natural width, are ignored.
    pub fn bar_write(&self, offset: u64, data: &[u8]) {
        match region(offset) {
            Region::Common(off) => {
                let Some(value) = le_value(data) else { return };
                let mut selectors = lock(&self.selectors);
                let mut core = lock(&self.core);
                if common::write(
                    &mut core,
                    &self.interrupts,
                    &mut selectors,
                    self.admin,
                    (off, data.len()),
                    value,
                ) == WriteEffect::Reset
                {
                    lock(&self.notifications).fill(None);
                }
            }
            Region::Device(off) => lock(&self.core).write_config(off, data),
            Region::Notify(off) => self.notify(off, data),
            Region::Isr | Region::None => {}
        }
    }

    /// A write to the notification region: a 16-bit queue index, or with
    /// VIRTIO_F_NOTIFICATION_DATA a 32-bit value whose low 16 bits are the index, at the
    /// queue's own notify address. Anything else is ignored.
    fn notify(&self, off: u64, data: &[u8]) {
        let notification = match data.len() {
            2 => NotificationData::index_only(u16::from_le_bytes([data[0], data[1]])),
            4 => {
                let data_negotiated = lock(&self.core).negotiated(Feature::NotificationData);
                if !data_negotiated {
                    return;
                }
                NotificationData::decode(u32::from_le_bytes([data[0], data[1], data[2], data[3]]))
            }
            _ => return,
        };
        let queue = notification.queue;
        let at_its_address = off == u64::from(queue) * u64::from(layout::NOTIFY_OFF_MULTIPLIER);
        if queue >= self.num_queues || !at_its_address {
            return;
        }
        if let Some(slot) = lock(&self.notifications).get_mut(usize::from(queue)) {
            *slot = Some(notification);
        }
        match &self.kick {
            KickMode::Worker(fds) => {
                if let Some(fd) = fds.get(usize::from(queue)) {
                    // The eventfd only overflows after 2^64 - 2 unread kicks.
                    let _ = fd.write(1);
                }
            }
            KickMode::Direct => lock(&self.core).kick(queue),
        }
    }
}

impl<M: GuestMemory + Send + Sync + 'static> PciTransport for VirtioPciFunction<M> {
    fn read(&self, offset: u64, data: &mut [u8]) {
        self.bar_read(offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.bar_write(offset, data);
    }

    fn config_read(&self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        let start = usize::from(offset).min(CONFIG_SPACE_LEN);
        let n = data.len().min(CONFIG_SPACE_LEN - start);
        data[..n].copy_from_slice(&self.config_space[start..start + n]);
        if let Some(window) = &self.pci_cfg {
            // Seed 004: reads through the window work the same in every mode.
            window.overlay(start, &mut data[..n], |at, buf| self.bar_read(at, buf));
        }
    }

    fn config_write(&self, offset: u16, data: &[u8]) {
        let Some(window) = &self.pci_cfg else {
            return;
        };
        let offset = usize::from(offset);
        if !window.touches(offset, data.len()) {
            return;
        }
        // Seed 004: "the device MUST ignore writes when the device mode is set to Freeze".
        if lock(&self.core).admin_mode() == DevMode::Freeze {
            return;
        }
        window.write(offset, data, |at, bytes| self.bar_write(at, bytes));
    }
}
