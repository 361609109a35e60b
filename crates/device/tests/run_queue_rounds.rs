//! The core's processing loop re-checks a queue after re-arming notifications (so an EVENT_IDX
//! driver keeps kicking), but must not spin on a device that leaves buffers in the ring on
//! purpose, such as a receive queue with no frame to deliver.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::context::StateLog;
use common::CoreDriver;

/// Seed 000 device rules keep holding (nothing consumed, nothing notified) and the kick returns:
/// buffers left available by the device do not make the core loop.
#[test]
fn kick_returns_when_the_device_leaves_buffers_available() {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        // A device that takes nothing until it has something to deliver (here: never).
        let mut d = CoreDriver::new(Box::new(StateLog::new(Default::default(), 8)));
        d.start_default();
        d.offer(3);
        d.core.kick(0);
        let _ = done.send((d.collect().len(), d.irq.used()));
    });
    let (used, interrupts) = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("kick did not return: the core spins on available buffers");
    assert_eq!((used, interrupts), (0, 0));
}
