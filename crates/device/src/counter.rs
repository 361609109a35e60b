//! [`Counter`]: an event count shared between the thread that counts and the threads that read
//! it (statistics of a device, of its backend, of a transport's interrupts), and
//! [`counter_getters!`](crate::counter_getters), the read accessors of a struct of them.

use std::sync::atomic::{AtomicU64, Ordering};

/// A count that only grows, readable from any thread while it is counted. Sequentially
/// consistent, so a test that saw an effect also sees it counted.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Counts `n` more.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::SeqCst);
    }

    /// Counts one more.
    pub fn increment(&self) {
        self.add(1);
    }
}

/// Read accessors, one per [`Counter`] field of the same name, each with its doc comment:
/// `counter_getters! { /// Frames sent. sent, }` inside an `impl` block gives
/// `pub fn sent(&self) -> u64`.
#[macro_export]
macro_rules! counter_getters {
    ($($(#[doc = $doc:literal])+ $field:ident),+ $(,)?) => {
        $(
            $(#[doc = $doc])+
            pub fn $field(&self) -> u64 {
                self.$field.get()
            }
        )+
    };
}
