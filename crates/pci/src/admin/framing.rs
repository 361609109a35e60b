//! The driver's view of a device-context byte stream: where its fields begin and end, fed in
//! pieces of any size, so the owner's driver knows whether what it wrote (or read) so far is a
//! sequence of complete contexts or stops inside one.
//!
//! Seed 004 driver rules this serves: "The driver MUST NOT change the device mode to Stop or
//! Active in the command VIRTIO_ADMIN_CMD_DEV_MODE_SET when device context is partially
//! written", "the driver MUST write a complete device context", and "The driver SHOULD read the
//! complete device context".

use virtio_lm_spec::context::{padded_len, ContextFieldHeader, FieldType, FIELD_HEADER_LEN};
use zerocopy::FromBytes;

/// Field framing of a context stream, fed piece by piece.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct ContextFraming {
    /// Bytes of a field header not yet complete (fewer than [`FIELD_HEADER_LEN`]).
    header: Vec<u8>,
    /// Value and padding bytes of the current field still to come.
    skip: u64,
    /// The current field is an END_MARKER: the context ends with it.
    ending: bool,
    /// A START_MARKER was seen and its END_MARKER not yet.
    open: bool,
    /// The stream so far began with a START_MARKER.
    started: bool,
    /// Bytes fed.
    fed: u64,
}

impl ContextFraming {
    /// Takes the next bytes of the stream.
    pub(super) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                data = &data[n..];
                self.skip -= n as u64;
                self.fed += n as u64;
                if self.skip == 0 {
                    self.field_done();
                }
                continue;
            }
            let first_field = self.fed == self.header.len() as u64;
            let n = (FIELD_HEADER_LEN - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..n]);
            data = &data[n..];
            self.fed += n as u64;
            let Ok((header, _)) = ContextFieldHeader::read_from_prefix(&self.header) else {
                continue;
            };
            self.header.clear();
            match header.field_type() {
                FieldType::START_MARKER => {
                    self.open = true;
                    self.started |= first_field;
                }
                FieldType::END_MARKER => self.ending = true,
                _ => {}
            }
            self.skip = padded_len(usize::try_from(header.length()).unwrap_or(usize::MAX)) as u64;
            if self.skip == 0 {
                self.field_done();
            }
        }
    }

    fn field_done(&mut self) {
        if std::mem::take(&mut self.ending) {
            self.open = false;
        }
    }

    /// Bytes were fed after the last complete context: one is begun and not ended.
    pub(super) fn partly_written(&self) -> bool {
        self.open || !self.header.is_empty() || self.skip > 0
    }

    /// The stream is one or more complete contexts: it began with a START_MARKER and every
    /// context it began has ended.
    pub(super) fn complete(&self) -> bool {
        self.started && !self.partly_written()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    fn field(ty: FieldType, value: &[u8]) -> Vec<u8> {
        let mut bytes = ContextFieldHeader::new(ty, 0, value.len() as u32)
            .as_bytes()
            .to_vec();
        bytes.extend_from_slice(value);
        bytes.resize(bytes.len().div_ceil(8) * 8, 0);
        bytes
    }

    fn context() -> Vec<u8> {
        [
            field(FieldType::START_MARKER, &[]),
            field(FieldType::DEVICE_STATUS, &[0xf; 8]),
            field(FieldType::DEVICE_CONFIG, &[1, 2, 3]),
            field(FieldType::END_MARKER, &[]),
        ]
        .concat()
    }

    /// Seed 004: a context is complete from START_MARKER to END_MARKER, whatever the pieces;
    /// every cut inside it leaves it partly written.
    #[test]
    fn partly_written_at_every_cut() {
        let ctx = context();
        for cut in 0..=ctx.len() {
            let mut f = ContextFraming::default();
            f.feed(&ctx[..cut]);
            let inside = cut != 0 && cut != ctx.len();
            assert_eq!(f.partly_written(), inside, "cut at {cut}");
            f.feed(&ctx[cut..]);
            assert!(f.complete(), "cut at {cut}");
        }
        let mut bytes = ContextFraming::default();
        for b in &ctx {
            bytes.feed(std::slice::from_ref(b));
        }
        assert!(bytes.complete());
    }

    /// Two contexts in a row are complete; a stream that does not begin with START_MARKER,
    /// or that ends inside the second context, is not.
    #[test]
    fn several_contexts_and_bad_starts() {
        let two = [context(), context()].concat();
        let mut f = ContextFraming::default();
        f.feed(&two);
        assert!(f.complete());
        let mut f = ContextFraming::default();
        f.feed(&two[..two.len() - 8]);
        assert!(f.partly_written() && !f.complete());
        let mut f = ContextFraming::default();
        f.feed(&context()[8..]);
        assert!(!f.complete());
        assert!(!ContextFraming::default().complete());
    }
}
