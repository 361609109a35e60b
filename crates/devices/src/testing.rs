//! Shared pieces for tests of this crate and of the crates built on it (behind the
//! `test-utils` feature): a temporary image file for blk backends.

use std::path::{Path, PathBuf};

/// A temporary image file named after the test's `prefix` and `tag` (and the process, so
/// parallel test binaries do not collide), removed on drop.
pub struct ImageFile(PathBuf);

impl ImageFile {
    /// An image of `len` bytes, each `fill`.
    pub fn new(prefix: &str, tag: &str, len: usize, fill: u8) -> Self {
        // Two tests of one process may ask for the same tag: a sequence number keeps one's
        // drop from deleting the other's image.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "virtio-lm-{prefix}-{}-{seq}-{tag}.img",
            std::process::id()
        ));
        std::fs::write(&path, vec![fill; len]).unwrap();
        Self(path)
    }

    /// Where the image lives.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ImageFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Blk backend faults that delay each request by 0 up to `max_micros` µs, varying with the
/// request id and sector, so requests finish out of order.
pub fn jitter(max_micros: u64) -> crate::Faults {
    crate::Faults {
        delay: Some(std::sync::Arc::new(move |info: &crate::RequestInfo| {
            std::time::Duration::from_micros(
                (u64::from(info.id) * 37 + info.sector * 11) % max_micros,
            )
        })),
        ..crate::Faults::default()
    }
}
