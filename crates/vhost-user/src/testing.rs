//! Test rig (feature `test-utils`): our backend on a private socket, and a frontend built on the
//! `vhost` crate's frontend side with memfd guest RAM and our queue drivers on it, issuing
//! virtio-blk requests. Every message is sent with NEED_REPLY once REPLY_ACK is negotiated, so
//! each call returns after the backend handled it; every wait has a deadline that only a hang
//! reaches.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserDirtyLogRegion, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_lm_devices::blk::config::{request_type, status};
use virtio_lm_devices::blk::BlkOptions;
use virtio_lm_devices::testing::ImageFile;
use virtio_lm_queue::{BufferSpec, QueueConfig, RingDriver, RingFeatures, RingKind};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::engine::ring_bits;
use crate::handler::protocol_features;
use crate::{BackendOptions, Server};

/// Longest wait for anything the backend does; reached only by a hang.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Guest RAM of the test frontend.
pub const RAM_SIZE: u64 = 4 << 20;
/// The frontend virtual address the rig claims its guest RAM is at (the backend only
/// translates ring addresses with it).
pub const USER_BASE: u64 = 0x7f00_0000_0000;
/// Where request buffers start in guest RAM (rings live below, 64 KiB per queue).
pub const DATA_BASE: u64 = 1 << 20;
/// Guest RAM reserved per request slot (header, data, status).
pub const SLOT: u64 = 0x4_0000;

/// A unique short path in the temporary directory (pid + sequence number).
pub fn temp_path(tag: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("vlm-vu-{}-{seq}-{tag}", std::process::id()))
}

/// Our backend serving a temporary image on a temporary socket.
pub struct TestBackend {
    /// The server (stopped on drop).
    pub server: Option<Server>,
    /// The socket path.
    pub socket: PathBuf,
    /// The image.
    pub image: ImageFile,
}

impl TestBackend {
    /// A backend with `queues` queues of 64 on a 1 MiB image filled with `0x5a`; `tune` may
    /// change the options.
    pub fn start(tag: &str, queues: u16, tune: impl FnOnce(&mut BackendOptions)) -> Self {
        let image = ImageFile::new("vhost-user", tag, 1 << 20, 0x5a);
        let mut blk = BlkOptions::new(image.path());
        blk.num_queues = queues;
        blk.queue_size = 64;
        let mut options = BackendOptions::new(blk);
        tune(&mut options);
        let socket = temp_path(&format!("{tag}.sock"));
        let server = Server::start(&socket, options).expect("backend starts");
        Self {
            server: Some(server),
            socket,
            image,
        }
    }

    /// Connects a frontend.
    pub fn connect(&self) -> TestFrontend {
        TestFrontend::connect(&self.socket)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            for end in server.stop() {
                // Shown with a failing test's output.
                eprintln!(
                    "connection ended: {} (ring error: {:?})",
                    end.reason, end.ring_error
                );
            }
        }
    }
}

/// One ring of the test frontend.
pub struct TestQueue {
    /// The driver side.
    pub driver: RingDriver,
    /// Kick eventfd.
    pub kick: EventFd,
    /// Call eventfd.
    pub call: EventFd,
}

/// The test frontend: the `vhost` crate's frontend, memfd guest RAM, our drivers.
pub struct TestFrontend {
    /// The frontend.
    pub frontend: Frontend,
    /// A second handle on the socket, for hand-made messages.
    pub raw: UnixStream,
    /// Guest RAM as the driver sees it.
    pub mem: GuestMemoryMmap<()>,
    ram: File,
    /// Rings by index (None until started).
    pub queues: Vec<Option<TestQueue>>,
    /// Features acked.
    pub features: u64,
}

impl TestFrontend {
    /// Connects to `socket` (the server binds before it starts, so this cannot race it).
    pub fn connect(socket: &Path) -> Self {
        let stream = UnixStream::connect(socket).expect("connect to the backend");
        let raw = stream.try_clone().unwrap();
        let frontend = Frontend::from_stream(stream, 255);
        let ram = memfd::MemfdOptions::default()
            .create("vlm-guest-ram")
            .expect("memfd")
            .into_file();
        ram.set_len(RAM_SIZE).unwrap();
        let region = GuestRegionMmap::from_range(
            GuestAddress(0),
            RAM_SIZE as usize,
            Some(FileOffset::new(ram.try_clone().unwrap(), 0)),
        )
        .unwrap();
        let mem = GuestMemoryMmap::from_regions(vec![region]).unwrap();
        Self {
            frontend,
            raw,
            mem,
            ram,
            queues: (0..8).map(|_| None).collect(),
            features: 0,
        }
    }

    /// Moves this frontend — guest RAM, rings and drivers — to the backend at `socket` (a
    /// migration to another backend, or a restarted one): a new connection, nothing negotiated
    /// on it yet.
    pub fn reconnect(&mut self, socket: &Path) {
        let stream = UnixStream::connect(socket).expect("connect to the backend");
        self.raw = stream.try_clone().unwrap();
        self.frontend = Frontend::from_stream(stream, 255);
    }

    /// SET_OWNER, features (`extra` ring features on top of VERSION_1 and PROTOCOL_FEATURES),
    /// protocol features (all offered, so REPLY_ACK: every later message is acknowledged), and
    /// the memory table.
    pub fn negotiate(&mut self, extra: u64) {
        self.frontend.set_owner().unwrap();
        let offered = self.frontend.get_features().unwrap();
        let features =
            ring_bits::VERSION_1 | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() | extra;
        assert_eq!(offered & features, features, "backend offers {offered:#x}");
        self.set_features(features).unwrap();
        let protocol = self.frontend.get_protocol_features().unwrap();
        assert_eq!(protocol, protocol_features());
        self.frontend.set_protocol_features(protocol).unwrap();
        self.frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        self.set_mem_table(RAM_SIZE).unwrap();
    }

    /// SET_FEATURES.
    pub fn set_features(&mut self, features: u64) -> vhost::Result<()> {
        self.features = features;
        self.frontend.set_features(features)
    }

    /// SET_MEM_TABLE with one region of `size` bytes of the guest RAM file.
    pub fn set_mem_table(&mut self, size: u64) -> vhost::Result<()> {
        self.frontend
            .set_mem_table(&[VhostUserMemoryRegionInfo {
                guest_phys_addr: 0,
                memory_size: size,
                userspace_addr: USER_BASE,
                mmap_offset: 0,
                mmap_handle: self.ram.as_raw_fd(),
            }])
            .map(drop)
    }

    /// The ring format the acked features select.
    pub fn kind(&self) -> RingKind {
        if self.features & ring_bits::RING_PACKED != 0 {
            RingKind::Packed
        } else {
            RingKind::Split
        }
    }

    /// Lays out ring `index` (size `size`) in guest RAM, programs it with the base of a fresh
    /// ring (split 0; packed: both wrap counters 1, as QEMU sends it) and starts it.
    pub fn start_queue(&mut self, index: usize, size: u16) {
        let features = RingFeatures {
            event_idx: self.features & ring_bits::EVENT_IDX != 0,
            indirect_desc: self.features & ring_bits::INDIRECT_DESC != 0,
        };
        let (config, _) = QueueConfig::contiguous(
            self.kind(),
            size,
            GuestAddress(index as u64 * 0x1_0000),
            features,
        );
        let driver = RingDriver::new(config, &self.mem).unwrap();
        let queue = TestQueue {
            driver,
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            call: EventFd::new(EFD_NONBLOCK).unwrap(),
        };
        self.queues[index] = Some(queue);
        let base = match self.kind() {
            RingKind::Split => 0,
            RingKind::Packed => 0x8000_8000,
        };
        self.restart_queue(index, base);
    }

    /// Programs ring `index` on its ring memory and driver at `base` (sent whole, 32 bits, as
    /// QEMU does for packed rings) and starts it: also how a ring restarts after a stop.
    pub fn restart_queue(&mut self, index: usize, base: u32) {
        let q = self.queues[index].take().unwrap();
        let config = *q.driver.config();
        self.frontend.set_vring_num(index, config.size).unwrap();
        self.frontend
            .set_vring_addr(index, &vring_config(&config, None))
            .unwrap();
        assert_eq!(self.raw_vring_base(index as u32, base), Some(0));
        self.frontend.set_vring_call(index, &q.call).unwrap();
        self.frontend.set_vring_kick(index, &q.kick).unwrap();
        self.frontend.set_vring_enable(index, true).unwrap();
        self.queues[index] = Some(q);
    }

    /// SET_VRING_BASE with a 32-bit value, hand-made; returns the REPLY_ACK value (None if the
    /// connection closed).
    pub fn raw_vring_base(&self, index: u32, base: u32) -> Option<u64> {
        let mut body = [0u8; 8];
        body[..4].copy_from_slice(&index.to_le_bytes());
        body[4..].copy_from_slice(&base.to_le_bytes());
        self.raw_request(10, &body)
    }

    /// Sends message `code` with `body` and NEED_REPLY on the raw handle; returns the u64 reply
    /// (None if the backend closed the connection instead).
    pub fn raw_request(&self, code: u32, body: &[u8]) -> Option<u64> {
        self.raw.set_read_timeout(Some(DEADLINE)).unwrap();
        crate::frontend::raw_request(&self.raw, code, body).ok()
    }

    /// Whether the backend closed the connection: EOF (or a reset) within the deadline.
    pub fn is_closed(&self) -> bool {
        let mut raw = &self.raw;
        raw.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut byte = [0u8; 1];
        match raw.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    /// Submits a request on ring `q` in buffer slot `slot` without waiting: `kind` (IN or OUT),
    /// `sector`, `data` (OUT payload; for IN its length is the read length). Returns the id.
    pub fn submit(&mut self, q: usize, slot: u64, kind: u32, sector: u64, data: &[u8]) -> u16 {
        let base = DATA_BASE + slot * SLOT;
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&kind.to_le_bytes());
        header[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&header, GuestAddress(base)).unwrap();
        let data_at = base + 0x1000;
        let status_at = data_at + data.len() as u64;
        self.mem
            .write_slice(&[0xff], GuestAddress(status_at))
            .unwrap();
        let len = data.len() as u32;
        let mut buffers = vec![BufferSpec::readable(base, 16)];
        match kind {
            request_type::OUT => {
                self.mem.write_slice(data, GuestAddress(data_at)).unwrap();
                buffers.push(BufferSpec::readable(data_at, len));
            }
            _ if len > 0 => buffers.push(BufferSpec::writable(data_at, len)),
            _ => {}
        }
        buffers.push(BufferSpec::writable(status_at, 1));
        let queue = self.queues[q].as_mut().unwrap();
        let id = queue.driver.add_chain(&self.mem, &buffers).unwrap();
        queue.driver.publish(&self.mem).unwrap();
        queue.kick.write(1).unwrap();
        id
    }

    /// Waits until ring `q` has returned `count` buffers (collected together); returns them.
    pub fn wait_used(&mut self, q: usize, count: usize) -> Vec<virtio_lm_queue::UsedBuffer> {
        let deadline = Instant::now() + DEADLINE;
        let mut used = Vec::new();
        let queue = self.queues[q].as_mut().unwrap();
        while used.len() < count {
            used.extend(queue.driver.collect_used(&self.mem).unwrap());
            if used.len() >= count {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ring {q}: {} of {count} used",
                used.len()
            );
            let _ = queue.driver.enable_interrupts(&self.mem);
            wait_eventfd(&queue.call, 50);
        }
        used
    }

    /// The status byte and data of the request in `slot` with `len` data bytes.
    pub fn result(&self, slot: u64, len: usize) -> (u8, Vec<u8>) {
        let data_at = DATA_BASE + slot * SLOT + 0x1000;
        let mut data = vec![0; len];
        self.mem
            .read_slice(&mut data, GuestAddress(data_at))
            .unwrap();
        let status = self
            .mem
            .read_obj::<u8>(GuestAddress(data_at + len as u64))
            .unwrap();
        (status, data)
    }

    /// One request on ring `q`, waited for: returns the status and the data (IN).
    pub fn request(&mut self, q: usize, kind: u32, sector: u64, data: &[u8]) -> (u8, Vec<u8>) {
        self.submit(q, 0, kind, sector, data);
        self.wait_used(q, 1);
        self.result(0, data.len())
    }

    /// Writes `data` at `sector` and reads it back on ring `q`; panics on any difference.
    pub fn write_and_verify(&mut self, q: usize, sector: u64, data: &[u8]) {
        let (st, _) = self.request(q, request_type::OUT, sector, data);
        assert_eq!(st, status::OK, "write status");
        let (st, back) = self.request(q, request_type::IN, sector, &vec![0; data.len()]);
        assert_eq!(st, status::OK, "read status");
        assert_eq!(back, data, "read back");
    }

    /// A dirty log for the guest RAM: a memfd of one page (1 bit per 4 KiB page) handed over
    /// with SET_LOG_BASE. Returns the file, to read and clear the bits.
    pub fn set_log(&self) -> File {
        let log = memfd::MemfdOptions::default()
            .create("vlm-dirty-log")
            .unwrap()
            .into_file();
        log.set_len(4096).unwrap();
        self.frontend
            .set_log_base(
                0,
                Some(VhostUserDirtyLogRegion {
                    mmap_size: 4096,
                    mmap_offset: 0,
                    mmap_handle: log.as_raw_fd(),
                }),
            )
            .unwrap();
        log
    }
}

/// VringConfigData for `config` at the rig's frontend virtual addresses.
pub fn vring_config(config: &QueueConfig, log: Option<u64>) -> VringConfigData {
    VringConfigData {
        queue_max_size: config.size,
        queue_size: config.size,
        flags: u32::from(log.is_some()),
        desc_table_addr: USER_BASE + config.desc_table.0,
        used_ring_addr: USER_BASE + config.device_area.0,
        avail_ring_addr: USER_BASE + config.driver_area.0,
        log_addr: log,
    }
}

/// The bits of a dirty log, one per 4 KiB guest page, as page numbers.
pub fn dirty_pages(log: &File) -> Vec<u64> {
    let mut bytes = vec![0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(log, &mut bytes, 0).unwrap();
    let mut pages = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        for bit in 0..8 {
            if b & (1 << bit) != 0 {
                pages.push(i as u64 * 8 + bit);
            }
        }
    }
    pages
}

/// Clears a dirty log.
pub fn clear_log(log: &File) {
    std::os::unix::fs::FileExt::write_all_at(log, &[0u8; 4096], 0).unwrap();
}

/// Waits up to `ms` milliseconds for `fd` to be signalled and consumes it.
fn wait_eventfd(fd: &EventFd, ms: i32) {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd that outlives the call; poll(2) writes only its `revents`.
    unsafe { libc::poll(&mut poll, 1, ms) };
    let _ = fd.read();
}
