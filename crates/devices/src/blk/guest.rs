//! Completing a block request: data and status byte written into the chain's writable part.

use virtio_lm_device::{DeviceError, QueueAccess};
use virtio_lm_queue::DescriptorChain;
use vm_memory::GuestMemory;

use crate::guest_io::{write_segments, GuestAccessError};

/// Completes a request: writes `data` (IN or GET_ID bytes) at the start of the writable part,
/// the status into its last byte, and returns the chain used with the bytes written.
///
/// The caller checked that the chain has a writable byte. If the data cannot be written the
/// request fails with IOERR; if even the status cannot be written the device needs a reset.
pub(crate) fn finish_request<M: GuestMemory + ?Sized>(
    access: &mut QueueAccess<'_, M>,
    chain: &DescriptorChain,
    data: Option<&[u8]>,
    status: u8,
) -> Result<(), DeviceError> {
    let mem = access.mem();
    let status_at = u64::from(chain.writable_len().saturating_sub(1));
    let mut status = status;
    let mut written = 0u32;
    if let Some(data) = data.filter(|d| !d.is_empty()) {
        // The data never reaches the status byte: parsing bounded it by the writable length.
        match write_segments(mem, chain.writable(), 0, data) {
            Ok(()) => written = data.len() as u32,
            Err(GuestAccessError) => status = super::config::status::IOERR,
        }
    }
    write_segments(mem, chain.writable(), status_at, &[status])
        .map_err(|_| DeviceError::MalformedRequest("virtio-blk: status byte cannot be written"))?;
    access.add_used(chain.id(), written + 1)?;
    Ok(())
}
