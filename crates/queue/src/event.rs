//! Notification-suppression arithmetic shared by the device and driver sides.

use virtio_lm_spec::queue_state::PackedRingPosition;
use virtio_lm_spec::ring::{
    RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_MASK,
};

use crate::config::QueueConfig;

/// The EVENT_IDX rule (split rings, and packed rings in DESC mode): the other side asked to be
/// notified when the index passes `event`; `old..new` are the entries produced since the last
/// notification decision. True when `event` lies in `[old, new)`, all modulo 2^16.
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// A position in a packed ring: the 15-bit index and the wrap counter, as seed 001 encodes the
/// available and used state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RingPosition {
    /// Slot index, below the queue size.
    pub index: u16,
    /// Wrap counter: starts at 1 (`true`), flips each time the index wraps to 0.
    pub wrap_counter: bool,
}

impl RingPosition {
    /// The initial position: index 0, wrap counter 1.
    pub const INITIAL: Self = Self {
        index: 0,
        wrap_counter: true,
    };

    /// Seed 001 encoding: bits 0–14 index, bit 15 wrap counter.
    pub fn to_state(self) -> u16 {
        PackedRingPosition::new(self.index, self.wrap_counter).to_u16()
    }

    /// Decodes the seed 001 encoding.
    pub fn from_state(state: u16) -> Self {
        let position = PackedRingPosition::from_u16(state);
        Self {
            index: position.index,
            wrap_counter: position.wrap_counter,
        }
    }

    /// Moves forward by `slots` in a ring of `size` entries, flipping the wrap counter on each wrap.
    pub fn advance(self, slots: u16, size: u16) -> Self {
        let mut index = u32::from(self.index) + u32::from(slots);
        let mut wrap_counter = self.wrap_counter;
        let size32 = u32::from(size);
        while index >= size32 {
            index -= size32;
            wrap_counter = !wrap_counter;
        }
        Self {
            index: index as u16,
            wrap_counter,
        }
    }

    /// Position on a line of `2 * size` slots that the pair (index, wrap) walks around: lets two
    /// positions be subtracted.
    pub fn linear(self, size: u16) -> u32 {
        u32::from(self.index)
            + if self.wrap_counter {
                0
            } else {
                u32::from(size)
            }
    }

    /// Slots from `earlier` forward to `self`, in `0..2 * size`.
    pub fn distance_from(self, earlier: Self, size: u16) -> u32 {
        let span = 2 * u32::from(size);
        (self.linear(size) + span - earlier.linear(size)) % span
    }
}

/// The packed-ring DESC rule: notify when the used descriptor at `event` was written since the
/// last decision, i.e. `event` lies in `[old, new)` walking forward around the ring.
pub fn packed_need_event(
    event: RingPosition,
    new: RingPosition,
    old: RingPosition,
    size: u16,
) -> bool {
    event.distance_from(old, size) < new.distance_from(old, size)
}

/// A packed ring's event suppression structure as read from guest memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventSuppression {
    /// The mode bits of `flags`: ENABLE, DISABLE or DESC (3 is reserved).
    mode: u16,
    /// `desc`: the position the other side wants to hear about in DESC mode.
    event: RingPosition,
}

impl EventSuppression {
    /// From the raw `desc` and `flags` fields.
    pub(crate) fn from_raw(desc: u16, flags: u16) -> Self {
        Self {
            mode: flags & RING_EVENT_FLAGS_MASK,
            event: RingPosition::from_state(desc),
        }
    }

    /// Whether the structure asks for a notification after `slots` slots were published,
    /// moving the position from `old` to `new`. The same rule on both sides: the device reads
    /// the driver's structure, the driver the device's.
    pub(crate) fn wants(
        self,
        config: &QueueConfig,
        old: RingPosition,
        new: RingPosition,
        slots: u32,
    ) -> bool {
        match self.mode {
            RING_EVENT_FLAGS_DISABLE => false,
            // DESC without EVENT_IDX, and the reserved value 3, count as ENABLE: a spurious
            // notification is harmless, a missed one hangs the other side.
            RING_EVENT_FLAGS_DESC if config.features.event_idx => {
                // Positions repeat every two laps (index and wrap counter): that many slots
                // certainly passed the event position; fewer are compared exactly.
                slots >= 2 * u32::from(config.size)
                    || packed_need_event(self.event, new, old, config.size)
            }
            _ => true,
        }
    }
}
