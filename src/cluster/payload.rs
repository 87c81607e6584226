//! A client's frame as it arrives from another node.
//!
//! The broker hands up the JSON text of a frame without knowing how the
//! layers above frame it for a transport, and without copying it out of the
//! message that carried it: the one copy is made by whoever frames it.

use std::fmt;

/// The JSON text of a frame another node sent, still inside the message
/// that carried it.
pub struct Payload {
    message: redis::Msg,
    /// Where the frame starts in the message's bytes.
    at: usize,
}

impl Payload {
    /// The frame that starts at byte `at` of a Redis channel message.
    pub(super) fn in_message(message: redis::Msg, at: usize) -> Payload {
        Payload { message, at }
    }

    /// The frame's JSON text; `None` when it is not UTF-8 (another node
    /// never sends such a frame: the message is damaged).
    pub fn json(&self) -> Option<&str> {
        let bytes = self.message.get_payload_bytes();
        std::str::from_utf8(bytes.get(self.at..).unwrap_or_default()).ok()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.message.get_payload_bytes();
        f.debug_struct("Payload")
            .field("bytes", &bytes.len().saturating_sub(self.at))
            .finish()
    }
}
