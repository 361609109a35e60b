//! A PCI function served by a [`Worker`], as a device type's PCI workload runs it, and the
//! transport features such a workload negotiates.

use std::sync::Arc;

use virtio_lm_device::{CoreOptions, QuiesceMode, VirtioDevice, Worker};
use virtio_lm_spec::{Feature, Profile};
use vm_memory::GuestMemory;
use vmm_sys_util::eventfd::EventFd;

use crate::{KickMode, VirtioPciFunction};

/// A function around `device` on `mem`, quiescing by `mode`, with an MSI-X vector per queue
/// and one for configuration changes, and the [`Worker`] serving its kicks and `wake` (the
/// device's completion eventfd). Dropping the worker stops it.
pub fn worker_function<M: GuestMemory + Send + Sync + 'static>(
    device: Box<dyn VirtioDevice<M>>,
    mem: Arc<M>,
    mode: QuiesceMode,
    wake: Arc<EventFd>,
) -> (Arc<VirtioPciFunction<M>>, Worker) {
    let vectors = device.queue_max_sizes().len() as u16 + 1;
    let options = CoreOptions {
        quiesce_mode: mode,
        ..CoreOptions::default()
    };
    let function = VirtioPciFunction::with_device(device, mem, options, vectors, true);
    let function = Arc::new(function.expect("function"));
    let KickMode::Worker(kicks) = function.kick_mode().clone() else {
        panic!("a function built for a worker is in worker mode");
    };
    let core = function.core().clone();
    let worker = Worker::spawn_with_wakers(core, kicks, vec![wake]).expect("worker");
    (function, worker)
}

/// VERSION_1, DEVICE_STOP, QUEUE_STATE and SUSPEND, with RING_PACKED if `packed` and EVENT_IDX
/// if `event_idx`: the transport features of a migration workload.
pub fn transport_features(packed: bool, event_idx: bool) -> u64 {
    let mut transport = vec![
        Feature::Version1,
        Feature::DeviceStop,
        Feature::QueueState,
        Feature::Suspend,
    ];
    transport.extend(packed.then_some(Feature::RingPacked));
    transport.extend(event_idx.then_some(Feature::EventIdx));
    Profile::Seeds
        .feature_set(&transport)
        .expect("seed features")
}
