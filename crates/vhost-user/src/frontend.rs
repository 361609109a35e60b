//! A vhost-user-blk frontend (feature `frontend`) on the `vhost` crate's frontend side: memfd
//! guest RAM and one ring driven by our queue crate's driver. It is what the load generator
//! ([`crate::bench`]) drives and what compares two backends' configuration spaces.
//!
//! Unlike the test rig, it assumes nothing of the backend: it may be ours or anyone's
//! (qemu-storage-daemon), so every refusal and every malformed answer is an error, never a
//! panic. Every backend gets the same feature set ([`ring_features`], [`PROTOCOL_FEATURES`]),
//! or the connection fails: a comparison between backends that negotiated different things
//! compares nothing (docs/spec-decisions.md §23).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_lm_queue::{QueueConfig, RingDriver, RingFeatures, RingKind};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::engine::ring_bits;

/// Protocol features every backend must offer and gets acked: REPLY_ACK (each message answers,
/// so a refusal is seen where it happens) and CONFIG (the configuration space is read).
pub const PROTOCOL_FEATURES: VhostUserProtocolFeatures =
    VhostUserProtocolFeatures::REPLY_ACK.union(VhostUserProtocolFeatures::CONFIG);

/// How long any answer of the backend may take before the frontend gives up.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The frontend virtual address the guest RAM is claimed to be at (backends only translate
/// ring addresses with it).
const USER_BASE: u64 = 0x7e00_0000_0000;

/// The virtio feature word acked with every backend for a `kind` ring: VERSION_1, EVENT_IDX
/// (what a Linux guest negotiates), PROTOCOL_FEATURES, and RING_PACKED for a packed ring.
pub fn ring_features(kind: RingKind) -> u64 {
    let packed = match kind {
        RingKind::Split => 0,
        RingKind::Packed => ring_bits::RING_PACKED,
    };
    ring_bits::VERSION_1
        | ring_bits::EVENT_IDX
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
        | packed
}

/// Why the frontend stopped.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// The socket or guest RAM failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A vhost-user message failed or was refused.
    #[error("vhost-user {message}: {detail}")]
    Message {
        /// The message.
        message: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The backend lacks something every backend must offer, or answered nonsense.
    #[error("backend: {0}")]
    Backend(String),
    /// The ring could not be laid out or driven.
    #[error("ring: {0}")]
    Ring(String),
}

/// Names the message a `vhost` result belongs to.
fn sent<T, E: std::fmt::Display>(
    message: &'static str,
    result: Result<T, E>,
) -> Result<T, FrontendError> {
    result.map_err(|e| FrontendError::Message {
        message,
        detail: e.to_string(),
    })
}

/// The driver side of the one ring, with its eventfds.
pub struct FrontendRing {
    /// The driver.
    pub driver: RingDriver,
    /// Kick eventfd (driver → backend).
    pub kick: EventFd,
    /// Call eventfd (backend → driver).
    pub call: EventFd,
}

/// A connected, negotiated frontend with guest RAM mapped by the backend.
pub struct BlkFrontend {
    frontend: Frontend,
    raw: UnixStream,
    _ram: File,
    /// Guest RAM as the driver sees it (guest-physical address 0 up).
    pub mem: GuestMemoryMmap<()>,
    /// The ring format negotiated.
    pub kind: RingKind,
    /// The features the backend offered (GET_FEATURES).
    pub offered: u64,
}

impl BlkFrontend {
    /// Connects to the backend at `socket`, negotiates [`ring_features`] for `kind` and
    /// [`PROTOCOL_FEATURES`], and hands it `ram_size` bytes of memfd guest RAM.
    pub fn connect(socket: &Path, kind: RingKind, ram_size: u64) -> Result<Self, FrontendError> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let raw = stream.try_clone()?;
        let frontend = Frontend::from_stream(stream, 1);
        let ram = memfd::MemfdOptions::default()
            .create("vlm-bench-ram")
            .map_err(|e| FrontendError::Io(std::io::Error::other(e)))?
            .into_file();
        ram.set_len(ram_size)?;
        let size = usize::try_from(ram_size).map_err(|_| FrontendError::Ring("RAM size".into()))?;
        let region = GuestRegionMmap::from_range(
            GuestAddress(0),
            size,
            Some(FileOffset::new(ram.try_clone()?, 0)),
        )
        .map_err(|e| FrontendError::Io(std::io::Error::other(e.to_string())))?;
        let mem = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| FrontendError::Io(std::io::Error::other(e.to_string())))?;
        let mut this = Self {
            frontend,
            raw,
            _ram: ram,
            mem,
            kind,
            offered: 0,
        };
        this.negotiate(ram_size)?;
        Ok(this)
    }

    fn negotiate(&mut self, ram_size: u64) -> Result<(), FrontendError> {
        sent("SET_OWNER", self.frontend.set_owner())?;
        let offered = sent("GET_FEATURES", self.frontend.get_features())?;
        self.offered = offered;
        let wanted = ring_features(self.kind);
        if offered & wanted != wanted {
            return Err(FrontendError::Backend(format!(
                "does not offer features {:#x}",
                wanted & !offered
            )));
        }
        sent("SET_FEATURES", self.frontend.set_features(wanted))?;
        let protocol = sent(
            "GET_PROTOCOL_FEATURES",
            self.frontend.get_protocol_features(),
        )?;
        if !protocol.contains(PROTOCOL_FEATURES) {
            return Err(FrontendError::Backend(format!(
                "does not offer protocol features {:?}",
                PROTOCOL_FEATURES - protocol
            )));
        }
        sent(
            "SET_PROTOCOL_FEATURES",
            self.frontend.set_protocol_features(PROTOCOL_FEATURES),
        )?;
        self.frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: ram_size,
            userspace_addr: USER_BASE,
            mmap_offset: 0,
            mmap_handle: self._ram.as_raw_fd(),
        };
        sent("SET_MEM_TABLE", self.frontend.set_mem_table(&[region])).map(drop)
    }

    /// The backend's configuration space, `len` bytes from offset 0 (GET_CONFIG).
    pub fn config(&mut self, len: u32) -> Result<Vec<u8>, FrontendError> {
        let zeros = vec![0u8; len as usize];
        let (_, payload) = sent(
            "GET_CONFIG",
            self.frontend
                .get_config(0, len, VhostUserConfigFlags::WRITABLE, &zeros),
        )?;
        if payload.len() != len as usize {
            return Err(FrontendError::Backend(format!(
                "GET_CONFIG answered {} bytes for {len}",
                payload.len()
            )));
        }
        Ok(payload)
    }

    /// Lays ring 0 of `size` entries out at guest address 0 and starts it at the base of a
    /// fresh ring (split 0; packed both wrap counters set, as QEMU sends it).
    pub fn start_ring(&mut self, size: u16) -> Result<FrontendRing, FrontendError> {
        let features = RingFeatures {
            event_idx: true,
            indirect_desc: false,
        };
        let (config, _) = QueueConfig::contiguous(self.kind, size, GuestAddress(0), features);
        let driver =
            RingDriver::new(config, &self.mem).map_err(|e| FrontendError::Ring(e.to_string()))?;
        let ring = FrontendRing {
            driver,
            kick: EventFd::new(EFD_NONBLOCK)?,
            call: EventFd::new(EFD_NONBLOCK)?,
        };
        let addresses = VringConfigData {
            queue_max_size: size,
            queue_size: size,
            flags: 0,
            desc_table_addr: USER_BASE + config.desc_table.0,
            used_ring_addr: USER_BASE + config.device_area.0,
            avail_ring_addr: USER_BASE + config.driver_area.0,
            log_addr: None,
        };
        sent("SET_VRING_NUM", self.frontend.set_vring_num(0, size))?;
        sent(
            "SET_VRING_ADDR",
            self.frontend.set_vring_addr(0, &addresses),
        )?;
        let base = match self.kind {
            RingKind::Split => 0,
            RingKind::Packed => 0x8000_8000,
        };
        self.set_vring_base(0, base)?;
        sent(
            "SET_VRING_CALL",
            self.frontend.set_vring_call(0, &ring.call),
        )?;
        sent(
            "SET_VRING_KICK",
            self.frontend.set_vring_kick(0, &ring.kick),
        )?;
        sent("SET_VRING_ENABLE", self.frontend.set_vring_enable(0, true))?;
        Ok(ring)
    }

    /// SET_VRING_BASE with all 32 bits (the `vhost` crate's frontend sends 16, too few for a
    /// packed ring's base).
    fn set_vring_base(&self, index: u32, base: u32) -> Result<(), FrontendError> {
        let mut body = [0u8; 8];
        body[..4].copy_from_slice(&index.to_le_bytes());
        body[4..].copy_from_slice(&base.to_le_bytes());
        match raw_request(&self.raw, 10, &body)? {
            0 => Ok(()),
            code => Err(FrontendError::Message {
                message: "SET_VRING_BASE",
                detail: format!("refused ({code})"),
            }),
        }
    }

    /// The process id of the backend on the other end of the socket (SO_PEERCRED).
    pub fn backend_pid(&self) -> Option<u32> {
        peer_pid(&self.raw)
    }
}

/// Sends vhost-user message `code` with `body` and NEED_REPLY on `stream` and returns the u64
/// of the reply. Only for messages the `vhost` crate's frontend cannot send as needed; nothing
/// else may be in flight on the connection.
pub fn raw_request(stream: &UnixStream, code: u32, body: &[u8]) -> std::io::Result<u64> {
    let mut msg = Vec::with_capacity(12 + body.len());
    msg.extend_from_slice(&code.to_le_bytes());
    msg.extend_from_slice(&(0x1u32 | VhostUserHeaderFlag::NEED_REPLY.bits()).to_le_bytes());
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(body);
    let mut stream = stream;
    stream.write_all(&msg)?;
    let mut reply = [0u8; 20];
    stream.read_exact(&mut reply)?;
    let mut value = [0u8; 8];
    value.copy_from_slice(&reply[12..20]);
    Ok(u64::from_le_bytes(value))
}

/// The pid of the peer of a connected unix socket.
pub fn peer_pid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable ucred and `len` its size, both outliving the call;
    // getsockopt(2) writes at most `len` bytes into it and the new length into `len`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
}
