//! Serving connections: a listening socket, one frontend at a time, each connection with a fresh
//! device model and worker. A connection ends when the frontend closes it or a message is
//! refused; then the rings are stopped and the next frontend is accepted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use vhost::vhost_user::{BackendListener, Error as VhostError, Listener};
use virtio_lm_devices::blk::{Blk, BlkError, BlkOptions};

use crate::config::ConfigProfile;
use crate::handler::VhostUserBlk;
use crate::log::DirtyLog;

/// How the backend is built.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// The blk device model's options (image, read-only, queues, queue size).
    pub blk: BlkOptions,
    /// The configuration values advertised (and the initial writeback they imply).
    pub config: ConfigProfile,
    /// Test-only: never write the dirty log, even while LOG_ALL is negotiated (the negative
    /// control of the migration tests).
    pub drop_dirty_log: bool,
}

impl BackendOptions {
    /// The backend of `blk`, dirty logging on.
    pub fn new(blk: BlkOptions) -> Self {
        Self {
            blk,
            config: ConfigProfile::Own,
            drop_dirty_log: false,
        }
    }
}

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be bound or accepted on.
    #[error("vhost-user socket: {0}")]
    Socket(#[source] VhostError),
    /// The image could not be opened.
    #[error(transparent)]
    Blk(#[from] BlkError),
    /// Threads or eventfds could not be created.
    #[error("cannot start the backend: {0}")]
    Io(#[from] std::io::Error),
}

/// What ended one connection.
#[derive(Debug)]
pub struct ConnectionEnd {
    /// The error the message loop stopped on (`Disconnected` for a frontend that closed).
    pub reason: VhostError,
    /// The first error that broke a ring during the connection, if any.
    pub ring_error: Option<String>,
}

/// Binds the listening socket at `path` (an old socket file there is replaced).
pub fn bind(path: &Path) -> Result<Listener, ServeError> {
    Listener::new(path, true).map_err(ServeError::Socket)
}

/// Accepts one frontend on `listener` and serves it until it closes or a message is refused.
pub fn serve_connection(
    listener: &mut Listener,
    options: &BackendOptions,
) -> Result<ConnectionEnd, ServeError> {
    let mut blk = options.blk.clone();
    options.config.adjust_options(&mut blk);
    let blk = Blk::open(blk)?;
    let log = Arc::new(DirtyLog::new(options.drop_dirty_log));
    let backend = VhostUserBlk::new(blk, log)?.with_config(options.config);
    let engine = backend.engine();
    let backend = Arc::new(Mutex::new(backend));
    let mut accepting =
        BackendListener::new(listener, backend.clone()).map_err(ServeError::Socket)?;
    let mut handler = loop {
        match accepting.accept() {
            Ok(Some(handler)) => break handler,
            Ok(None) => continue,
            Err(e) => return Err(ServeError::Socket(e)),
        }
    };
    let reason = loop {
        if let Err(e) = handler.handle_request() {
            break e;
        }
    };
    drop(handler);
    let mut engine = engine.lock().unwrap_or_else(PoisonError::into_inner);
    engine.stop_all();
    let ring_error = engine.last_error.clone();
    drop(engine);
    drop(backend);
    Ok(ConnectionEnd { reason, ring_error })
}

/// A backend serving connections on its own thread until stopped (tests, the bench).
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<ConnectionEnd>>>,
}

impl Server {
    /// Binds `path` now (a frontend may connect as soon as this returns) and serves
    /// connections one after another on a new thread.
    pub fn start(path: &Path, options: BackendOptions) -> Result<Self, ServeError> {
        let mut listener = bind(path)?;
        // Open the image once here so a bad option fails the start, not the first connection.
        drop(Blk::open(options.blk.clone())?);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vhost-user-server".into())
            .spawn(move || {
                let mut ends = Vec::new();
                while !stopping.load(Ordering::SeqCst) {
                    match serve_connection(&mut listener, &options) {
                        Ok(end) => ends.push(end),
                        Err(_) => break,
                    }
                }
                ends
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// Stops accepting (after the current connection ends) and returns how each connection
    /// ended.
    pub fn stop(mut self) -> Vec<ConnectionEnd> {
        self.finish()
    }

    fn finish(&mut self) -> Vec<ConnectionEnd> {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes a pending accept; the connection it makes ends at once.
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        let ends = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let _ = std::fs::remove_file(&self.path);
        ends
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.finish();
        }
    }
}
