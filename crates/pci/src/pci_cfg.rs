//! The VIRTIO_PCI_CAP_PCI_CFG window: access to BAR 0 through PCI configuration space
//! (`struct virtio_pci_cfg_cap`). The driver writes `bar`, `offset` and `length`; a write to
//! `pci_cfg_data` then writes `length` bytes to the BAR at `offset`, a read returns them.

use std::sync::Mutex;

use crate::layout::{self, PCI_CFG_CAP_LEN, PCI_CFG_DATA};

/// Offset of `bar` in the capability.
const BAR_FIELD: usize = 4;
/// Offset of `offset` in the capability.
const OFFSET_FIELD: usize = 8;
/// Offset of `length` in the capability.
const LENGTH_FIELD: usize = 12;

/// What the driver programmed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Window {
    bar: u8,
    offset: u32,
    length: u32,
}

impl Window {
    /// The BAR 0 access the window describes: (offset, length) for a 1, 2 or 4 byte access to
    /// BAR 0; `None` otherwise (then data reads 0 and writes go nowhere).
    fn access(&self) -> Option<(u64, usize)> {
        let len = match self.length {
            1 | 2 | 4 => self.length as usize,
            _ => return None,
        };
        (self.bar == layout::BAR).then_some((u64::from(self.offset), len))
    }
}

/// The window of one function: where its capability sits and what the driver programmed.
#[derive(Debug)]
pub(crate) struct PciCfgWindow {
    at: usize,
    window: Mutex<Window>,
}

impl PciCfgWindow {
    /// A window whose capability starts at configuration-space offset `at`.
    pub(crate) fn new(at: usize) -> Self {
        Self {
            at,
            window: Mutex::new(Window::default()),
        }
    }

    /// Configuration-space offset of the capability.
    pub(crate) fn at(&self) -> usize {
        self.at
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the driver programmed: `bar`, `offset`, `length`.
    pub(crate) fn registers(&self) -> (u8, u32, u32) {
        let w = *self.lock();
        (w.bar, w.offset, w.length)
    }

    /// Programs the window as a driver's writes would have.
    pub(crate) fn set_registers(&self, (bar, offset, length): (u8, u32, u32)) {
        *self.lock() = Window {
            bar,
            offset,
            length,
        };
    }

    /// Back to the state after reset (FLR).
    pub(crate) fn reset(&self) {
        *self.lock() = Window::default();
    }

    /// Whether `[offset, offset + len)` touches the capability.
    pub(crate) fn touches(&self, offset: usize, len: usize) -> bool {
        offset < self.at + PCI_CFG_CAP_LEN && offset + len > self.at
    }

    /// Overlays the live capability on `buf`, which holds configuration space from `start`.
    /// `bar_read` performs the data read when `buf` covers `pci_cfg_data`.
    pub(crate) fn overlay(&self, start: usize, buf: &mut [u8], bar_read: impl Fn(u64, &mut [u8])) {
        if !self.touches(start, buf.len()) {
            return;
        }
        let window = *self.lock();
        let mut image = layout::pci_cfg_cap();
        image[BAR_FIELD] = window.bar;
        image[OFFSET_FIELD..OFFSET_FIELD + 4].copy_from_slice(&window.offset.to_le_bytes());
        image[LENGTH_FIELD..LENGTH_FIELD + 4].copy_from_slice(&window.length.to_le_bytes());
        let data_at = self.at + PCI_CFG_DATA;
        if let Some((offset, len)) = window.access() {
            if start < data_at + 4 && start + buf.len() > data_at {
                bar_read(offset, &mut image[PCI_CFG_DATA..PCI_CFG_DATA + len]);
            }
        }
        // Link the capability to the next one as the static image does.
        for (i, byte) in buf.iter_mut().enumerate() {
            if let Some(rel) = (start + i)
                .checked_sub(self.at)
                .filter(|&r| r < PCI_CFG_CAP_LEN)
            {
                if rel != 1 {
                    *byte = image[rel];
                }
            }
        }
    }

    /// A driver write of `data` at configuration-space `offset`. Only natural accesses to the
    /// writable fields count: `bar` (1 byte), `offset` and `length` (4 bytes), and
    /// `pci_cfg_data` (which forwards `length` bytes to the BAR through `bar_write`).
    pub(crate) fn write(&self, offset: usize, data: &[u8], bar_write: impl Fn(u64, &[u8])) {
        let Some(rel) = offset.checked_sub(self.at) else {
            return;
        };
        let mut window = self.lock();
        match (rel, data.len()) {
            (BAR_FIELD, 1) => window.bar = data[0],
            (OFFSET_FIELD, 4) => {
                window.offset = u32::from_le_bytes([data[0], data[1], data[2], data[3]])
            }
            (LENGTH_FIELD, 4) => {
                window.length = u32::from_le_bytes([data[0], data[1], data[2], data[3]])
            }
            (PCI_CFG_DATA, 1 | 2 | 4) => {
                let access = window.access();
                // The BAR access must not run under the window lock (it may take the core).
                drop(window);
                if let Some((at, len)) = access {
                    if let Some(bytes) = data.get(..len) {
                        bar_write(at, bytes);
                    }
                }
            }
            _ => {}
        }
    }
}
