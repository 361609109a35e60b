//! A background thread its owner stops by dropping it.
//!
//! Device workers, tunnel receivers and test peers all run a loop on their own thread that must
//! end before what it borrows goes away. Each has its own way of being told to stop (a flag it
//! polls, an eventfd it waits on, a field under a lock); what they share is the order on drop:
//! tell the thread, then join it, exactly once.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A named thread that is told to stop and joined when [`Self::stop`] is called or the value
/// is dropped.
pub struct StoppableThread {
    /// Tells the thread to return. Kept until the value is dropped, so whatever it holds (an
    /// eventfd the thread waits on) outlives the thread.
    signal: Box<dyn Fn() + Send + Sync>,
    thread: Option<JoinHandle<()>>,
}

impl StoppableThread {
    /// Runs `body` on a thread called `name`; stopping calls `signal`, which must make `body`
    /// return, then joins.
    pub fn spawn(
        name: &str,
        signal: impl Fn() + Send + Sync + 'static,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<Self> {
        let thread = std::thread::Builder::new().name(name.into()).spawn(body)?;
        Ok(Self {
            signal: Box::new(signal),
            thread: Some(thread),
        })
    }

    /// Runs `body` with a stop flag on a thread called `name`; stopping sets the flag, which
    /// `body` polls, then joins.
    pub fn with_flag(
        name: &str,
        body: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> io::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        let seen = flag.clone();
        Self::spawn(
            name,
            move || flag.store(true, Ordering::Relaxed),
            move || body(&seen),
        )
    }

    /// Tells the thread to stop and waits for it. Later calls do nothing. A thread that
    /// panicked has nothing more to give, so its panic is not passed on.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            (self.signal)();
            let _ = thread.join();
        }
    }
}

impl Drop for StoppableThread {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for StoppableThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoppableThread")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A body that polls its flag until told to stop, then records that it returned.
    fn polling(returned: &Arc<AtomicBool>) -> impl FnOnce(&AtomicBool) + Send + 'static {
        let returned = returned.clone();
        move |stop| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            returned.store(true, Ordering::Relaxed);
        }
    }

    #[test]
    fn stop_signals_then_joins_once() {
        let returned = Arc::new(AtomicBool::new(false));
        let mut thread = StoppableThread::with_flag("test-stop", polling(&returned)).unwrap();
        thread.stop();
        // Joined: the body has returned by the time stop does.
        assert!(returned.load(Ordering::Relaxed));
        thread.stop();
        assert!(format!("{thread:?}").contains("running: false"));
    }

    #[test]
    fn drop_stops_the_thread() {
        let returned = Arc::new(AtomicBool::new(false));
        drop(StoppableThread::with_flag("test-drop", polling(&returned)).unwrap());
        assert!(returned.load(Ordering::Relaxed));
    }

    #[test]
    fn a_panicked_body_is_joined_quietly() {
        let mut thread = StoppableThread::spawn("test-panic", || {}, || panic!("body")).unwrap();
        thread.stop();
    }
}
