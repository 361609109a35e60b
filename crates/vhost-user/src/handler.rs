//! The vhost-user message side: [`VhostUserBlk`] implements the `vhost` crate's
//! `VhostUserBackendReqHandlerMut`, turning each frontend message into a change of the
//! [`Engine`]. Every value from the frontend is checked before use; a refused message returns an
//! error, which the `vhost` crate answers with a failed REPLY_ACK where one was asked for, and
//! after which the server closes the connection (docs/spec-decisions.md §14).

use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVirtioFeatures,
    VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    Error as VhostError, GpuBackend, Result as VhostResult, VhostUserBackendReqHandlerMut,
};
use virtio_lm_device::VirtioDevice;
use virtio_lm_devices::blk::Blk;

use crate::config::ConfigProfile;
use crate::device_state::{self, Expected, Transfer};
use crate::engine::{ring_bits, Engine, EngineError, Worker};
use crate::inflight::InflightArea;
use crate::log::DirtyLog;
use crate::memory::{BackendMemory, MemoryTable};
use crate::vring::{decode_base, RingAddresses, Vring};

/// The largest configuration space read or write accepted (the vhost-user limit).
const MAX_CONFIG_LEN: u32 = 256;

/// VIRTIO_BLK_F_TOPOLOGY: offered here, not by the device model, because qemu-storage-daemon
/// offers it and a guest that negotiated it there can only migrate to a backend that offers it
/// too (spec-decisions §14).
const TOPOLOGY: u64 = 1 << virtio_bindings::virtio_blk::VIRTIO_BLK_F_TOPOLOGY;

/// The device model's configuration space with the topology fields filled in: one logical
/// block per physical block, no alignment offset, minimum and optimal I/O of one block.
fn config_space(blk: &Blk, profile: ConfigProfile) -> Vec<u8> {
    type C = virtio_bindings::virtio_blk::virtio_blk_config;
    let dev: &dyn VirtioDevice<BackendMemory> = blk;
    let mut space = vec![0; dev.config_len()];
    dev.read_config(0, &mut space);
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = space.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(std::mem::offset_of!(C, physical_block_exp), &[0]);
    put(std::mem::offset_of!(C, alignment_offset), &[0]);
    put(std::mem::offset_of!(C, min_io_size), &1u16.to_le_bytes());
    put(std::mem::offset_of!(C, opt_io_size), &1u32.to_le_bytes());
    profile.apply(&mut space);
    space
}

/// Features the backend offers besides the device type's own (docs/spec-decisions.md §14).
pub fn transport_features() -> u64 {
    ring_bits::VERSION_1
        | ring_bits::INDIRECT_DESC
        | ring_bits::EVENT_IDX
        | ring_bits::RING_PACKED
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
        | VhostUserVirtioFeatures::LOG_ALL.bits()
}

/// Protocol features offered. STATUS is not: the `vhost` crate does not dispatch its messages.
/// INFLIGHT_SHMFD is, GET_VRING_BASE_INFLIGHT is not: a ring stop still completes every request
/// (spec-decisions §24). DEVICE_STATE carries our device context (spec-decisions §25).
pub fn protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::LOG_SHMFD
        | VhostUserProtocolFeatures::INFLIGHT_SHMFD
        | VhostUserProtocolFeatures::DEVICE_STATE
}

fn refuse(e: impl std::fmt::Display) -> VhostError {
    VhostError::ReqHandlerError(std::io::Error::other(e.to_string()))
}

impl From<EngineError> for VhostError {
    fn from(e: EngineError) -> Self {
        refuse(e)
    }
}

/// The vhost-user-blk backend of one connection.
pub struct VhostUserBlk {
    engine: Arc<Mutex<Engine>>,
    offered: u64,
    protocol: u64,
    max_queue_size: u16,
    num_queues: u64,
    config: ConfigProfile,
    /// The DEVICE_STATE transfer between SET_DEVICE_STATE_FD and CHECK_DEVICE_STATE.
    transfer: Option<Transfer>,
    // Last: dropping it stops and joins the worker.
    _worker: Worker,
}

impl VhostUserBlk {
    /// A backend serving `blk`, writing the dirty log into `log`.
    pub fn new(blk: Blk, log: Arc<DirtyLog>) -> std::io::Result<Self> {
        let dev: &dyn VirtioDevice<BackendMemory> = &blk;
        let offered = transport_features() | dev.device_features() | TOPOLOGY;
        let sizes = dev.queue_max_sizes();
        let max_queue_size = sizes.first().copied().unwrap_or(0);
        let num_queues = sizes.len() as u64;
        let engine = Arc::new(Mutex::new(Engine::new(blk, log)?));
        let worker = Worker::spawn(engine.clone())?;
        Ok(Self {
            engine,
            offered,
            protocol: 0,
            max_queue_size,
            num_queues,
            config: ConfigProfile::Own,
            transfer: None,
            _worker: worker,
        })
    }

    /// Advertises `profile`'s configuration values instead of the device model's own.
    pub fn with_config(mut self, profile: ConfigProfile) -> Self {
        self.config = profile;
        self.offered |= profile.extra_features();
        self
    }

    /// The engine (for the server's clean-up and for diagnostics).
    pub fn engine(&self) -> Arc<Mutex<Engine>> {
        self.engine.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `area` the in-flight area of the rings started from now on.
    fn set_area(&mut self, area: InflightArea) -> VhostResult<()> {
        let mut engine = self.lock();
        if engine.vrings.iter().any(|v| v.queue.is_some()) {
            return Err(refuse("in-flight area changed while rings run"));
        }
        engine.inflight = Some(Arc::new(area));
        Ok(())
    }

    /// Ring `index` of a message that carries it in 8 bits or 32.
    fn with_ring<T>(
        &self,
        index: u32,
        f: impl FnOnce(&mut Vring, &mut Engine) -> VhostResult<T>,
    ) -> VhostResult<T> {
        let mut engine = self.lock();
        let mut vring = std::mem::take(engine.vring(index)?);
        let result = f(&mut vring, &mut engine);
        engine.vrings[index as usize] = vring;
        result
    }
}

impl VhostUserBackendReqHandlerMut for VhostUserBlk {
    fn set_owner(&mut self) -> VhostResult<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> VhostResult<()> {
        self.reset_device()
    }

    fn reset_device(&mut self) -> VhostResult<()> {
        let mut engine = self.lock();
        engine.stop_all();
        for vring in &mut engine.vrings {
            *vring = Vring::default();
        }
        engine.features = 0;
        engine.log.set_logging(false);
        // A reset device starts over: the frontend gets a new in-flight area.
        engine.inflight = None;
        Ok(())
    }

    fn get_features(&mut self) -> VhostResult<u64> {
        Ok(self.offered)
    }

    fn set_features(&mut self, features: u64) -> VhostResult<()> {
        if features & !self.offered != 0 {
            return Err(refuse(format!(
                "features {:#x} were not offered",
                features & !self.offered
            )));
        }
        let mut engine = self.lock();
        engine.features = features;
        engine
            .log
            .set_logging(features & VhostUserVirtioFeatures::LOG_ALL.bits() != 0);
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        regions: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> VhostResult<Option<Vec<vhost::VhostUserMemoryRegionBase>>> {
        let mut engine = self.lock();
        let table = MemoryTable::map(regions, files, &engine.log).map_err(refuse)?;
        engine.memory = Some(table);
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VhostResult<()> {
        let max = u32::from(self.max_queue_size);
        self.with_ring(index, |vring, _| {
            if vring.queue.is_some() {
                return Err(refuse("SET_VRING_NUM on a running ring"));
            }
            if num == 0 || num > max {
                return Err(refuse(format!("ring size {num} not in 1..={max}")));
            }
            vring.size = num as u16;
            Ok(())
        })
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        log: u64,
    ) -> VhostResult<()> {
        self.with_ring(index, |vring, engine| {
            let memory = engine
                .memory
                .as_ref()
                .ok_or_else(|| refuse("SET_VRING_ADDR before SET_MEM_TABLE"))?;
            let translate = |addr: u64| {
                memory.to_guest(addr).ok_or_else(|| {
                    refuse(format!("ring address {addr:#x} outside the memory table"))
                })
            };
            let addresses = RingAddresses {
                desc: translate(descriptor)?,
                driver: translate(available)?,
                device: translate(used)?,
            };
            // We log used-ring writes by the guest-physical address of the ring we write; that
            // is the log address only if the frontend says so (spec-decisions §14).
            if flags.contains(VhostUserVringAddrFlags::VHOST_VRING_F_LOG)
                && log != addresses.device.0
            {
                return Err(refuse(format!(
                    "log address {log:#x} is not the used ring's guest address {:#x}",
                    addresses.device.0
                )));
            }
            if vring.queue.is_none() {
                vring.addresses = Some(addresses);
            } else if vring.addresses != Some(addresses) {
                return Err(refuse("SET_VRING_ADDR moves a running ring"));
            }
            Ok(())
        })
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VhostResult<()> {
        self.with_ring(index, |vring, engine| {
            if vring.queue.is_some() {
                return Err(refuse("SET_VRING_BASE on a running ring"));
            }
            decode_base(engine.ring_kind(), base, vring.size).map_err(refuse)?;
            vring.base = base;
            Ok(())
        })
    }

    fn get_vring_base(&mut self, index: u32) -> VhostResult<VhostUserVringState> {
        let base = self.lock().stop(index)?;
        Ok(VhostUserVringState::new(index, base))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VhostResult<()> {
        let index = u32::from(index);
        let fd = fd.ok_or_else(|| refuse("polling mode (no kick fd) is not supported"))?;
        let mut engine = self.lock();
        let auto_enable = engine.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() == 0;
        let vring = engine.vring(index)?;
        vring.kick = Some(Arc::new(fd));
        if auto_enable {
            vring.enabled = true;
        }
        engine.try_start(index)?;
        engine.wake();
        Ok(())
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VhostResult<()> {
        self.lock().vring(u32::from(index))?.call = fd;
        Ok(())
    }

    fn set_vring_err(&mut self, index: u8, fd: Option<File>) -> VhostResult<()> {
        self.lock().vring(u32::from(index))?.err = fd;
        Ok(())
    }

    fn get_protocol_features(&mut self) -> VhostResult<VhostUserProtocolFeatures> {
        Ok(protocol_features())
    }

    fn set_protocol_features(&mut self, features: u64) -> VhostResult<()> {
        if features & !protocol_features().bits() != 0 {
            return Err(refuse("protocol features not offered"));
        }
        self.protocol = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> VhostResult<u64> {
        Ok(self.num_queues)
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VhostResult<()> {
        let mut engine = self.lock();
        let vring = engine.vring(index)?;
        vring.enabled = enable;
        // Buffers made available while the ring was disabled get looked at now.
        vring.kicked |= enable;
        engine.try_start(index)?;
        engine.wake();
        Ok(())
    }

    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VhostResult<Vec<u8>> {
        if offset
            .checked_add(size)
            .is_none_or(|end| end > MAX_CONFIG_LEN)
        {
            return Err(refuse("configuration read out of range"));
        }
        let engine = self.lock();
        let mut data = vec![0; size as usize];
        virtio_lm_device::read_config_bytes(
            &config_space(&engine.blk, self.config),
            offset as usize,
            &mut data,
        );
        Ok(data)
    }

    fn set_config(
        &mut self,
        offset: u32,
        buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VhostResult<()> {
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        if offset
            .checked_add(len)
            .is_none_or(|end| end > MAX_CONFIG_LEN)
        {
            return Err(refuse("configuration write out of range"));
        }
        let mut engine = self.lock();
        VirtioDevice::<BackendMemory>::write_config(&mut engine.blk, offset as usize, buf);
        Ok(())
    }

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VhostResult<()> {
        Err(VhostError::InvalidOperation("not a GPU"))
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VhostResult<File> {
        Err(VhostError::InvalidOperation("no shared objects"))
    }

    fn get_inflight_fd(
        &mut self,
        inflight: &VhostUserInflight,
    ) -> VhostResult<(VhostUserInflight, File)> {
        let area =
            InflightArea::create(inflight.num_queues, inflight.queue_size).map_err(refuse)?;
        let file = area.file().try_clone().map_err(refuse)?;
        let reply = VhostUserInflight {
            mmap_size: area.size(),
            mmap_offset: 0,
            num_queues: inflight.num_queues,
            queue_size: inflight.queue_size,
        };
        self.set_area(area)?;
        Ok((reply, file))
    }

    fn set_inflight_fd(&mut self, inflight: &VhostUserInflight, file: File) -> VhostResult<()> {
        let area = InflightArea::map(
            file,
            inflight.mmap_size,
            inflight.mmap_offset,
            inflight.num_queues,
            inflight.queue_size,
        )
        .map_err(refuse)?;
        self.set_area(area)
    }

    fn get_max_mem_slots(&mut self) -> VhostResult<u64> {
        Err(VhostError::InvalidOperation(
            "CONFIGURE_MEM_SLOTS not offered",
        ))
    }

    fn add_mem_region(
        &mut self,
        _region: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy_listening: Option<bool>,
    ) -> VhostResult<Option<vhost::VhostUserMemoryRegionBase>> {
        Err(VhostError::InvalidOperation(
            "CONFIGURE_MEM_SLOTS not offered",
        ))
    }

    fn remove_mem_region(&mut self, _region: &VhostUserSingleMemoryRegion) -> VhostResult<()> {
        Err(VhostError::InvalidOperation(
            "CONFIGURE_MEM_SLOTS not offered",
        ))
    }

    fn set_device_state_fd(
        &mut self,
        direction: VhostTransferStateDirection,
        phase: VhostTransferStatePhase,
        fd: File,
    ) -> VhostResult<Option<File>> {
        if phase != VhostTransferStatePhase::STOPPED {
            return Err(refuse("only the stopped phase exists"));
        }
        // A new transfer replaces one the frontend abandoned.
        self.transfer = None;
        let transfer = match direction {
            VhostTransferStateDirection::SAVE => {
                let bytes = device_state::snapshot(&self.lock(), self.offered).map_err(refuse)?;
                Transfer::save(bytes, fd)
            }
            VhostTransferStateDirection::LOAD => Transfer::load(
                fd,
                Expected {
                    offered: self.offered,
                    queues: self.num_queues as usize,
                    max_queue_size: self.max_queue_size,
                },
            ),
        }
        .map_err(refuse)?;
        self.transfer = Some(transfer);
        Ok(None)
    }

    fn check_device_state(&mut self) -> VhostResult<()> {
        let transfer = self
            .transfer
            .take()
            .ok_or_else(|| refuse("CHECK_DEVICE_STATE without SET_DEVICE_STATE_FD"))?;
        match transfer.finish().map_err(refuse)? {
            None => Ok(()),
            Some(context) => device_state::apply(&mut self.lock(), context).map_err(refuse),
        }
    }

    fn get_shmem_config(&mut self) -> VhostResult<VhostUserShMemConfig> {
        Err(VhostError::InvalidOperation("SHMEM not offered"))
    }

    fn set_log_base(&mut self, log: &VhostUserLog, file: File) -> VhostResult<()> {
        let engine = self.lock();
        engine
            .log
            .set_area(file, log.mmap_size, log.mmap_offset)
            .map_err(refuse)
    }
}
