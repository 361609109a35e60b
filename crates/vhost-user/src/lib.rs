//! A vhost-user-blk backend built on virtio-lm's own blk device model, queues and dirty-logged
//! guest memory, speaking the vhost-user protocol through the `vhost` crate's backend side
//! (`VhostUserBackendReqHandlerMut` served from its listener).
//!
//! What it adds to the device model, for a frontend such as QEMU (docs/spec-decisions.md §14):
//! - split and packed rings, EVENT_IDX and indirect descriptors, several queues;
//! - GET_VRING_BASE stops a ring after completing every request in flight on it and returns its
//!   state in the vhost-user encoding; SET_VRING_BASE restores it — what live migration moves;
//! - the dirty log (LOG_SHMFD, VHOST_F_LOG_ALL): every write into guest RAM sets its page's bit
//!   while LOG_ALL is negotiated, and only then;
//! - in-flight tracking (INFLIGHT_SHMFD, [`inflight`]): a backend restarted after a crash
//!   resubmits exactly the requests it had taken, split and packed (spec-decisions §24);
//! - backend state transfer (DEVICE_STATE, [`device_state`]): our device context (§25);
//! - every frontend value is checked: a bad message gets an error reply or a closed connection.
//!
//! ```no_run
//! use virtio_lm_devices::blk::BlkOptions;
//! use virtio_lm_vhost_user::{BackendOptions, Server};
//!
//! let server = Server::start("/tmp/vub.sock".as_ref(), BackendOptions::new(BlkOptions::new("disk.img")))?;
//! // … a frontend connects to /tmp/vub.sock …
//! server.stop();
//! # Ok::<(), virtio_lm_vhost_user::ServeError>(())
//! ```

#![deny(missing_docs)]

#[cfg(feature = "frontend")]
pub mod bench;
pub mod config;
pub mod device_state;
pub mod engine;
#[cfg(feature = "frontend")]
pub mod frontend;
pub mod handler;
pub mod inflight;
pub mod log;
pub mod memory;
mod server;
#[cfg(feature = "test-utils")]
pub mod testing;
pub mod vring;

pub use config::ConfigProfile;
pub use handler::VhostUserBlk;
pub use server::{bind, serve_connection, BackendOptions, ConnectionEnd, ServeError, Server};
