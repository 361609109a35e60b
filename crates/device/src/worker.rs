//! The device's worker thread: waits for the driver's queue notifications (one eventfd per
//! queue) and processes them on the shared core.

use std::io;
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemory;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::core::DeviceCore;
use crate::stoppable::StoppableThread;

/// A running worker; dropping it stops the thread.
pub struct Worker {
    thread: StoppableThread,
}

impl Worker {
    /// Starts a worker that processes queue `i` of `core` whenever `kicks[i]` is signalled.
    pub fn spawn<M: GuestMemory + Send + Sync + 'static>(
        core: Arc<Mutex<DeviceCore<M>>>,
        kicks: Vec<Arc<EventFd>>,
    ) -> io::Result<Self> {
        Self::spawn_with_wakers(core, kicks, Vec::new())
    }

    /// Like [`Self::spawn`], and also services the core ([`DeviceCore::service`]) whenever one of
    /// `wakers` is signalled: a device's background-completion eventfd goes here.
    pub fn spawn_with_wakers<M: GuestMemory + Send + Sync + 'static>(
        core: Arc<Mutex<DeviceCore<M>>>,
        kicks: Vec<Arc<EventFd>>,
        wakers: Vec<Arc<EventFd>>,
    ) -> io::Result<Self> {
        let exit = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let exit_token = kicks.len() as u64;
        epoll.ctl(
            ControlOperation::Add,
            exit.as_raw_fd(),
            EpollEvent::new(EventSet::IN, exit_token),
        )?;
        for (index, kick) in kicks.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                kick.as_raw_fd(),
                EpollEvent::new(EventSet::IN, index as u64),
            )?;
        }
        for (index, waker) in wakers.iter().enumerate() {
            let token = exit_token + 1 + index as u64;
            epoll.ctl(
                ControlOperation::Add,
                waker.as_raw_fd(),
                EpollEvent::new(EventSet::IN, token),
            )?;
        }
        let thread = StoppableThread::spawn(
            "virtio-worker",
            move || {
                let _ = exit.write(1);
            },
            move || run(&epoll, &core, &kicks, &wakers, exit_token),
        )?;
        Ok(Self { thread })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.thread.stop();
    }
}

use std::os::fd::AsRawFd;

fn run<M: GuestMemory + Send + Sync + 'static>(
    epoll: &Epoll,
    core: &Mutex<DeviceCore<M>>,
    kicks: &[Arc<EventFd>],
    wakers: &[Arc<EventFd>],
    exit_token: u64,
) {
    let mut events = vec![EpollEvent::default(); kicks.len() + wakers.len() + 1];
    loop {
        let ready = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        for event in &events[..ready] {
            let token = event.data();
            if token == exit_token {
                return;
            }
            if token > exit_token {
                if let Some(waker) = wakers.get((token - exit_token - 1) as usize) {
                    let _ = waker.read();
                    if let Ok(mut core) = core.lock() {
                        core.service();
                    }
                }
                continue;
            }
            let Some(kick) = kicks.get(token as usize) else {
                continue;
            };
            // Consume the notification before processing: a kick that lands during processing
            // re-arms the eventfd and is seen on the next round, so none is lost.
            let _ = kick.read();
            if let Ok(mut core) = core.lock() {
                core.kick(token as u16);
            }
        }
    }
}
