//! Fragmented messages, reassembled.
//!
//! A client may split a message into WebSocket fragments; the session puts
//! them back together, bounded by `max_frame_size` for the whole message,
//! and reads the result as one frame (a reassembled text must be UTF-8:
//! 4002, PROTOCOL.md 3).

use actix_http::ws::Item;
use actix_web::web::Bytes;
use bytestring::ByteString;

use super::Native;
use crate::protocol::{Close, CloseCode};
use crate::session::{Ctx, Session};

/// A fragmented message being reassembled.
pub(super) struct Fragments {
    text: bool,
    bytes: Vec<u8>,
}

impl Session<Native> {
    pub(super) fn on_fragment(&mut self, item: Item, ctx: &mut Ctx<Native>) {
        let (first, chunk, last) = match item {
            Item::FirstText(b) => (Some(true), b, false),
            Item::FirstBinary(b) => (Some(false), b, false),
            Item::Continue(b) => (None, b, false),
            Item::Last(b) => (None, b, true),
        };
        if let Some(text) = first {
            self.format.fragments = Some(Fragments {
                text,
                bytes: Vec::new(),
            });
        }
        let Some(fragments) = self.format.fragments.as_mut() else {
            return self.close(
                ctx,
                Close::new(
                    CloseCode::FatalDecode,
                    "continuation frame without a first fragment",
                ),
            );
        };
        if fragments.bytes.len() + chunk.len() > self.settings.max_frame_size {
            let max = self.settings.max_frame_size;
            return self.close(
                ctx,
                Close::new(CloseCode::TooBig, format!("message exceeds {max} bytes")),
            );
        }
        fragments.bytes.extend_from_slice(&chunk);
        if !last {
            return;
        }
        let Some(Fragments { text, bytes }) = self.format.fragments.take() else {
            return;
        };
        if !text {
            return self.on_binary(ctx);
        }
        self.on_utf8(Bytes::from(bytes), ctx);
    }

    /// A reassembled fragmented text message: it must be UTF-8 (4002,
    /// PROTOCOL.md 3; a single text frame is checked as it arrives).
    fn on_utf8(&mut self, bytes: Bytes, ctx: &mut Ctx<Native>) {
        match ByteString::try_from(bytes) {
            Ok(text) => self.on_text(text, ctx),
            Err(_) => self.close(
                ctx,
                Close::new(CloseCode::FatalDecode, "text message is not valid UTF-8"),
            ),
        }
    }
}
