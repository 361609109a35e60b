//! The machine tests' shared setup: a blk image, an echo peer's options and a bounded wait for
//! the guest's workloads to move on.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_devices::testing::ImageFile;
use virtio_lm_vm::{Machine, MachineOptions, NetEndpoints, RingFormat, MIB};

const IMAGE_LEN: usize = 4 << 20;

/// A zeroed 4 MiB blk image for the test `prefix`, case `tag`.
pub fn image(prefix: &str, tag: &str) -> ImageFile {
    ImageFile::new(prefix, tag, IMAGE_LEN, 0)
}

pub fn localhost() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A machine with blk on `image`, net to `echo`, and the dirtier on an 8 MiB working set.
pub fn options(
    image: &ImageFile,
    echo: &EchoPeer,
    ring: RingFormat,
    queues: u16,
) -> MachineOptions {
    MachineOptions {
        memory: 32 * MIB,
        blk: Some(image.path().to_path_buf()),
        net: Some(NetEndpoints {
            local: localhost(),
            remote: echo.addr(),
        }),
        ring,
        queues,
        dirty_rate_mib: 16,
        working_set_mib: 8,
        ..MachineOptions::default()
    }
}

/// Runs until each workload (blk completions, verified echoes, dirtier stamps) has moved on by
/// at least `n` (bounded).
pub fn run_for(machine: &Machine, n: u64) {
    let start = machine.report();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = machine.report();
        let blk = r.blk.unwrap().completed - start.blk.unwrap().completed;
        let net = r.net.unwrap().verified - start.net.unwrap().verified;
        let stamped = r.dirtier.stamped - start.dirtier.stamped;
        if blk >= n && net >= n && stamped >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no progress: {r:?}; errors {:?}",
            machine.vcpu_errors()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
