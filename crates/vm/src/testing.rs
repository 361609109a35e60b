//! The shared test rig of machines (this crate's tests and the migration engine's): a blk
//! image, an echo peer's options, and a bounded wait for the guest's workloads to move on.

use std::time::Duration;

use virtio_lm_devices::net::echo::EchoPeer;
use virtio_lm_devices::testing::ImageFile;

use crate::{Machine, MachineOptions, NetEndpoints, RingFormat, MIB};

const IMAGE_LEN: usize = 4 << 20;

/// A zeroed 4 MiB blk image for the test `prefix`, case `tag`.
pub fn image(prefix: &str, tag: &str) -> ImageFile {
    ImageFile::new(prefix, tag, IMAGE_LEN, 0)
}

/// 127.0.0.1, any port.
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

/// A running machine for the test case `prefix`/`tag` with the [`options`] above, and its blk
/// image and echo peer, which must outlive every machine started with those options.
pub fn start_machine(
    prefix: &str,
    tag: &str,
    ring: RingFormat,
    queues: u16,
) -> (ImageFile, EchoPeer, MachineOptions, Machine) {
    start_machine_with(prefix, tag, ring, queues, |o| o)
}

/// As [`start_machine`], the options changed by `adjust` first (a numbering profile, features
/// the guest's drivers leave out).
pub fn start_machine_with(
    prefix: &str,
    tag: &str,
    ring: RingFormat,
    queues: u16,
    adjust: impl FnOnce(MachineOptions) -> MachineOptions,
) -> (ImageFile, EchoPeer, MachineOptions, Machine) {
    let image = image(prefix, tag);
    let echo = EchoPeer::spawn(localhost()).unwrap();
    let machine_options = adjust(options(&image, &echo, ring, queues));
    let machine = Machine::start(machine_options.clone()).unwrap();
    (image, echo, machine_options, machine)
}

/// Runs until each workload (blk completions, verified echoes, dirtier stamps) has moved on by
/// at least `n` (bounded: panics after 60 s without it, which only a hang takes).
pub fn run_for(machine: &Machine, n: u64) {
    assert!(
        machine.wait_progress(n, Duration::from_secs(60)),
        "no progress: {:?}; errors {:?}",
        machine.report(),
        machine.vcpu_errors()
    );
}
