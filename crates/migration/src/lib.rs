//! The live-migration stream between a source and a destination VM process.
//!
//! A migration travels as a sequence of sections in each direction: source → destination carries
//! Start, Config, Memory rounds (each pre-copy round closed by a RoundEnd), DeviceContext,
//! FunctionState (v1.4 profile), VcpuState, Complete and Commit; destination → source carries Start, a RoundAck per RoundEnd,
//! Ready and CommitAck; either side may send Cancel or Error before Commit.
//! Every section is a fixed 16-byte header (magic, type, flags, payload length, sequence number),
//! the payload, and a crc32c over both (docs/stream-format.md has the byte layouts, the version
//! rule, the sequence diagram and both sides' state machines).
//!
//! The stream layer: [`StreamWriter`] frames typed [`Message`]s over any
//! [`std::io::Write`], [`StreamReader`] reads them back from any [`std::io::Read`] and refuses
//! anything malformed with a typed [`StreamError`] naming the section and its byte offset (never
//! a panic, never an allocation an attacker sized). Plain blocking std I/O: it works over a
//! `TcpStream` with timeouts the caller sets, and over a TLS stream. Without TLS the crc32c is an
//! integrity check against corruption, not authentication.
//!
//! The engine on it (seed 004, the admin-command strategy; spec-decisions §13): [`migrate`] on
//! the source takes a running [`virtio_lm_vm::Machine`] and a connected [`Link`] and returns a
//! [`MigrationReport`]; [`incoming`] on the destination builds a machine, receives, validates and
//! returns it running after Commit. A [`MigrationControl`] cancels and watches either.
//!
//! ```
//! use virtio_lm_migration::{
//!     Message, Pages, Phase, StreamReader, StreamWriter, PAGE_SIZE, PROTOCOL_VERSION,
//! };
//!
//! let mut wire = Vec::new();
//! let mut tx = StreamWriter::new(&mut wire);
//! tx.write(&Message::Start { version: PROTOCOL_VERSION }).unwrap();
//! // Two pages at 0x10000: the first zero (sent as a marker), the second data.
//! let mut pages = vec![0u8; 2 * PAGE_SIZE];
//! pages[PAGE_SIZE] = 0xab;
//! tx.write_memory(0, Phase::PreCopy, 0x10000, &pages).unwrap();
//! tx.write(&Message::Complete).unwrap();
//!
//! let mut rx = StreamReader::new(&wire[..]);
//! assert_eq!(rx.read_message().unwrap(), Message::Start { version: PROTOCOL_VERSION });
//! let Message::Memory(chunk) = rx.read_message().unwrap() else { panic!("not Memory") };
//! assert_eq!(chunk.ranges[0].pages, Pages::Zero(1));
//! assert!(matches!(&chunk.ranges[1].pages, Pages::Data(d) if d[0] == 0xab));
//! assert_eq!(rx.read_message().unwrap(), Message::Complete);
//! assert!(rx.read_message().is_err()); // closed: the stream ended between sections
//! ```

#![deny(missing_docs)]

mod config;
mod engine;
mod error;
mod function_state;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod header;
mod memory;
mod message;
mod reader;
#[cfg(feature = "test-utils")]
pub mod testing;
mod version;
mod writer;

pub use config::{
    DeviceConfig, MemoryRegion, VmConfig, MAX_DEVICES, MAX_DEVICE_CONFIG, MAX_REGIONS,
};
pub use engine::{
    incoming, incoming_with_timeout, migrate, vm_config, DestinationReport, Incoming, Inflight,
    Link, MigrateOptions, MigrationControl, MigrationError, MigrationReport, MigrationState,
    Outcome, PhaseSpan, Progress, RoundStats, Strategy, Tls, TlsFiles, TlsLink, LINK_TIMEOUT,
};
pub use engine::{Fault, FaultPoint};
pub use error::{Position, StreamError, WriteError};
pub use function_state::{FunctionState, MAX_FUNCTION_STATE, MAX_PENDING_VECTORS};
pub use header::{
    MessageType, Phase, SectionHeader, CRC_LEN, FLAG_FINAL, HEADER_LEN, MAGIC, MAX_CONFIG,
    MAX_DEVICE_CONTEXT, MAX_MEMORY_DATA, MAX_MEMORY_RANGES, MAX_TEXT, MAX_VCPU_STATE, PAGE_SIZE,
};
pub use memory::{
    MemoryChunk, MemoryChunkRef, MemoryRange, Pages, PagesRef, RangeRef, MEMORY_HEADER_LEN,
    RANGE_HEADER_LEN,
};
pub use message::{CancelReason, Message, COMMIT_ACK_LEN, ROUND_ACK_LEN, ROUND_END_LEN, START_LEN};
pub use reader::{Section, StreamReader};
pub use version::{accepts, PROTOCOL_VERSION};
pub use virtio_lm_vm::StatusBit;
pub use writer::StreamWriter;
