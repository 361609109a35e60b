//! The typed admin commands of [`AdminClient`]: one method per command, with the result
//! parsed and checked.

use virtio_lm_spec::admin::{
    group_type, opcode, DevCtxFieldInfo, DevCtxFieldsQueryHeader, DevMode, DevModeData,
};
use vm_memory::GuestMemory;
use zerocopy::{FromBytes, IntoBytes};

use super::client::{align8, AdminClient, ReadChunk};
use super::decode::{opcode_name, AdminCommand, AdminResult, MAX_COMMAND_DATA};
use super::error::AdminError;
use super::framing::ContextFraming;

impl<M: GuestMemory> AdminClient<M> {
    fn member_command(
        &mut self,
        op: u16,
        member: u64,
        data: Vec<u8>,
        result_len: usize,
    ) -> Result<AdminResult, AdminError> {
        self.execute(
            &AdminCommand::new(op, group_type::SRIOV, member, data),
            result_len,
        )
    }

    fn protocol(op: u16, member: u64, reason: &'static str) -> AdminError {
        AdminError::Protocol {
            command: opcode_name(op),
            member,
            reason,
        }
    }

    // ---- typed commands -------------------------------------------------------------------

    /// LIST_QUERY for the SR-IOV group: the supported opcodes as a bitmap (bit N of word N/64).
    pub fn list_query(&mut self) -> Result<Vec<u64>, AdminError> {
        let result = self.member_command(opcode::LIST_QUERY, 0, Vec::new(), 64)?;
        Ok(result
            .result
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
            .collect())
    }

    /// LIST_USE for the SR-IOV group with the opcodes in `list` (bitmap words).
    pub fn list_use(&mut self, list: &[u64]) -> Result<(), AdminError> {
        let data = list.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.member_command(opcode::LIST_USE, 0, data, 0)
            .map(|_| ())
    }

    /// LIST_QUERY, then LIST_USE of LIST_QUERY, LIST_USE and the seven device migration
    /// commands (seed 004: supported all or none). Fails if the device lacks any of them.
    pub fn use_migration_commands(&mut self) -> Result<(), AdminError> {
        let supported = self.list_query()?.first().copied().unwrap_or(0);
        let mut wanted = 1u64 << opcode::LIST_QUERY | 1u64 << opcode::LIST_USE;
        for op in opcode::DEVICE_MIGRATION {
            wanted |= 1u64 << op;
        }
        if supported & wanted != wanted {
            return Err(Self::protocol(
                opcode::LIST_QUERY,
                0,
                "the device lacks device migration commands",
            ));
        }
        self.list_use(&[wanted])
    }

    /// DEV_MODE_GET.
    pub fn dev_mode_get(&mut self, member: u64) -> Result<DevMode, AdminError> {
        let op = opcode::DEV_MODE_GET;
        let result = self.member_command(op, member, Vec::new(), size_of::<DevModeData>())?;
        let byte = *result
            .result
            .first()
            .ok_or_else(|| Self::protocol(op, member, "no mode in the result"))?;
        DevMode::try_from(byte).map_err(|_| Self::protocol(op, member, "unknown mode value"))
    }

    /// DEV_MODE_SET; waits for the member's requests in process if it must.
    pub fn dev_mode_set(&mut self, member: u64, mode: DevMode) -> Result<(), AdminError> {
        let data = DevModeData::new(mode).as_bytes().to_vec();
        self.member_command(opcode::DEV_MODE_SET, member, data, 0)
            .map(|_| ())
    }

    /// DEV_CTX_SIZE_GET: bytes left to read in the current mode.
    pub fn dev_ctx_size_get(&mut self, member: u64) -> Result<u32, AdminError> {
        let op = opcode::DEV_CTX_SIZE_GET;
        let result = self.member_command(op, member, Vec::new(), 8)?;
        let size = result
            .result
            .get(..4)
            .ok_or_else(|| Self::protocol(op, member, "no size in the result"))?;
        Ok(u32::from_le_bytes([size[0], size[1], size[2], size[3]]))
    }

    /// DEV_CTX_READ with room for `max_data` bytes of context (rounded up to a multiple of 8:
    /// the driver supplies writable parts in multiples of 64 bits).
    pub fn dev_ctx_read(&mut self, member: u64, max_data: usize) -> Result<ReadChunk, AdminError> {
        let op = opcode::DEV_CTX_READ;
        let result = self.member_command(op, member, Vec::new(), 8 + align8(max_data))?;
        let r = &result.result;
        let (Some(remaining), Some(size)) = (r.get(0..4), r.get(4..8)) else {
            return Err(Self::protocol(op, member, "result shorter than its header"));
        };
        let remaining =
            u32::from_le_bytes([remaining[0], remaining[1], remaining[2], remaining[3]]);
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
        let data = r
            .get(8..8 + size)
            .ok_or_else(|| Self::protocol(op, member, "size larger than the data returned"))?;
        Ok(ReadChunk {
            remaining,
            data: data.to_vec(),
        })
    }

    /// Reads the complete device context of the current mode in pieces of at most `chunk`
    /// bytes, until `remaining_ctx_size` is 0 (seed 004: "The driver SHOULD read the complete
    /// device context using one or multiple VIRTIO_ADMIN_CMD_DEV_CTX_READ commands").
    ///
    /// What was read must be whole contexts, START_MARKER to END_MARKER: if reading had already
    /// begun in this mode (the start is missing), or the device stops inside a context, this is
    /// an [`AdminError::Protocol`]; send DEV_CTX_DISCARD to read from the start.
    pub fn dev_ctx_read_all(&mut self, member: u64, chunk: usize) -> Result<Vec<u8>, AdminError> {
        let op = opcode::DEV_CTX_READ;
        let chunk = align8(chunk.max(8));
        let mut context = Vec::new();
        let mut framing = ContextFraming::default();
        // Bounded: a context is at most MAX_COMMAND_DATA bytes.
        let rounds = MAX_COMMAND_DATA / chunk + 2;
        for _ in 0..rounds {
            let piece = self.dev_ctx_read(member, chunk)?;
            if piece.data.is_empty() && piece.remaining > 0 {
                return Err(Self::protocol(
                    op,
                    member,
                    "no progress while context remains",
                ));
            }
            context.extend_from_slice(&piece.data);
            framing.feed(&piece.data);
            if piece.remaining == 0 {
                return if framing.complete() {
                    Ok(context)
                } else {
                    Err(Self::protocol(
                        op,
                        member,
                        "what was read is not a whole context from START_MARKER to END_MARKER",
                    ))
                };
            }
        }
        Err(Self::protocol(op, member, "the context does not end"))
    }

    /// DEV_CTX_WRITE of `data` in one command.
    pub fn dev_ctx_write(&mut self, member: u64, data: &[u8]) -> Result<(), AdminError> {
        self.member_command(opcode::DEV_CTX_WRITE, member, data.to_vec(), 0)
            .map(|_| ())
    }

    /// Writes the complete device context `context` (one or more contexts, START_MARKER to
    /// END_MARKER) in DEV_CTX_WRITE commands of at most `chunk` bytes each. Seed 004: "the
    /// driver MUST write a complete device context using one or multiple
    /// VIRTIO_ADMIN_CMD_DEV_CTX_WRITE commands": anything else is refused with
    /// [`AdminError::IncompleteContext`] before a byte is sent, and so is a write that would
    /// follow a context this client left partly written.
    pub fn dev_ctx_write_all(
        &mut self,
        member: u64,
        context: &[u8],
        chunk: usize,
    ) -> Result<(), AdminError> {
        let mut framing = ContextFraming::default();
        framing.feed(context);
        let reason = if self.context_partly_written(member) {
            Some("a context written before is not ended; send DEV_CTX_DISCARD first")
        } else if !framing.complete() {
            Some("it must begin with START_MARKER and end with END_MARKER")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(AdminError::IncompleteContext { member, reason });
        }
        for piece in context.chunks(chunk.max(1)) {
            self.dev_ctx_write(member, piece)?;
        }
        Ok(())
    }

    /// DEV_CTX_DISCARD.
    pub fn dev_ctx_discard(&mut self, member: u64) -> Result<(), AdminError> {
        self.member_command(opcode::DEV_CTX_DISCARD, member, Vec::new(), 0)
            .map(|_| ())
    }

    /// DEV_CTX_FIELDS_QUERY: the field types the member supports.
    pub fn dev_ctx_fields_query(
        &mut self,
        member: u64,
    ) -> Result<Vec<DevCtxFieldInfo>, AdminError> {
        let op = opcode::DEV_CTX_FIELDS_QUERY;
        let room = size_of::<DevCtxFieldsQueryHeader>() + 64 * size_of::<DevCtxFieldInfo>();
        let result = self.member_command(op, member, Vec::new(), room)?;
        let (header, mut rest) = DevCtxFieldsQueryHeader::read_from_prefix(&result.result)
            .map_err(|_| Self::protocol(op, member, "result shorter than its header"))?;
        let mut list = Vec::new();
        for _ in 0..header.count.get() {
            let Ok((entry, tail)) = DevCtxFieldInfo::read_from_prefix(rest) else {
                break;
            };
            list.push(entry);
            rest = tail;
        }
        Ok(list)
    }
}
