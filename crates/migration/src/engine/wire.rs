//! The link split into the stream layer's reader and writer (one thread uses both, so a
//! `RefCell` shares it), and the pacing of `--max-bandwidth`.

use std::cell::RefCell;
use std::io::{self, BufReader, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{Link, MigrationControl};
use crate::{StreamReader, StreamWriter};

/// The link, shared by the two halves.
pub(crate) struct Shared<L>(Rc<RefCell<L>>);

impl<L> Clone for Shared<L> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<L: Link> Shared<L> {
    /// Sets the link's timeouts.
    pub(crate) fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.0.borrow().set_timeouts(timeout)
    }
}

impl<L: Link> Read for Shared<L> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

/// The write half, paced to a byte rate when one is set.
pub(crate) struct Paced<L> {
    link: Shared<L>,
    limit: Option<u64>,
    start: Instant,
    sent: u64,
    /// While set, a cancel of this control ends a paced write (a slow link must not keep the
    /// operator waiting a whole Memory section).
    pub(crate) cancel: Option<MigrationControl>,
}

/// Largest piece written between two pacing checks, so a limit is kept smoothly.
const PACE_PIECE: usize = 256 << 10;

impl<L: Link> Write for Paced<L> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Err(io::Error::other("cancelled by the operator"));
        }
        let piece = match self.limit {
            Some(_) => &buf[..buf.len().min(PACE_PIECE)],
            None => buf,
        };
        let n = self.link.0.borrow_mut().write(piece)?;
        self.sent += n as u64;
        if let Some(limit) = self.limit.filter(|&l| l > 0) {
            let due = Duration::from_secs_f64(self.sent as f64 / limit as f64);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                // Pacing is the point here: a real link would hold the bytes back as long.
                std::thread::sleep(due - elapsed);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.link.0.borrow_mut().flush()
    }
}

/// Both halves of a link.
pub(crate) struct Wire<L: Link> {
    pub(crate) link: Shared<L>,
    pub(crate) rx: StreamReader<BufReader<Shared<L>>>,
    pub(crate) tx: StreamWriter<Paced<L>>,
}

impl<L: Link> Wire<L> {
    /// Splits `link`; the write half paced to `limit` bytes per second.
    pub(crate) fn new(link: L, limit: Option<u64>) -> Self {
        let link = Shared(Rc::new(RefCell::new(link)));
        Wire {
            rx: StreamReader::new(BufReader::with_capacity(1 << 20, link.clone())),
            tx: StreamWriter::new(Paced {
                link: link.clone(),
                limit,
                start: Instant::now(),
                sent: 0,
                cancel: None,
            }),
            link,
        }
    }

    /// Closes the link (the peer sees end of stream).
    pub(crate) fn close(&self) {
        self.link.0.borrow().close();
    }
}
