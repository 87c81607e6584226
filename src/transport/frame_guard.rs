//! Refuses an oversized WebSocket frame as soon as its header arrives.
//!
//! actix-http's codec only compares a frame's length with the limit once the
//! whole frame has been buffered, so a client announcing a 1 GiB frame could
//! make the gateway buffer 1 GiB before being refused. This adapter sits
//! between the socket and the codec, reads each frame header as the
//! bytes stream past (without copying the payload), and ends the stream with
//! an error when a declared length exceeds the limit.
//!
//! The limit is the session's to move ([`FrameLimit`]): a host behind an
//! adapter sends larger frames than anyone may send before identifying (a
//! Nest host's whole process list), so its session raises the limit once
//! the host is in, and a stranger can never make the gateway buffer more
//! than `max_frame_size`.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;

/// Longest possible frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

enum State {
    Header {
        buf: [u8; MAX_HEADER],
        have: usize,
    },
    Payload {
        remaining: u64,
    },
    /// A frame was refused and the error reported; what follows passes
    /// unexamined (only a lingering close reads it, to discard it).
    Refused,
}

/// The largest frame a connection's client may send now, shared by its
/// guard and its session, and whether a frame was refused for it.
#[derive(Debug)]
pub struct FrameLimit {
    max: Cell<usize>,
    oversized: Cell<bool>,
}

impl FrameLimit {
    pub fn new(max: usize) -> Rc<FrameLimit> {
        Rc::new(FrameLimit {
            max: Cell::new(max),
            oversized: Cell::new(false),
        })
    }

    /// The limit, in bytes.
    pub fn max(&self) -> usize {
        self.max.get()
    }

    /// Holds the frames that follow to `max` bytes.
    pub fn set(&self, max: usize) {
        self.max.set(max);
    }

    /// Whether a frame was refused (the session closes with 1009 rather
    /// than a generic error).
    pub fn oversized(&self) -> bool {
        self.oversized.get()
    }
}

pub struct FrameGuard<S> {
    inner: S,
    limit: Rc<FrameLimit>,
    state: State,
}

impl<S> FrameGuard<S> {
    /// Guards `inner` with `limit`.
    pub fn new(inner: S, limit: Rc<FrameLimit>) -> Self {
        FrameGuard {
            inner,
            limit,
            state: State::Header {
                buf: [0; MAX_HEADER],
                have: 0,
            },
        }
    }

    /// Follows the frame boundaries through `chunk`; false when a frame
    /// header declares more than the limit.
    fn inspect(&mut self, mut chunk: &[u8]) -> bool {
        while !chunk.is_empty() {
            match &mut self.state {
                State::Refused => return false,
                State::Payload { remaining } => {
                    let skip = (*remaining).min(chunk.len() as u64);
                    *remaining -= skip;
                    chunk = &chunk[skip as usize..];
                    if *remaining == 0 {
                        self.state = State::Header {
                            buf: [0; MAX_HEADER],
                            have: 0,
                        };
                    }
                }
                State::Header { buf, have } => {
                    // Take one byte at a time until the header is complete:
                    // headers are at most 14 bytes.
                    buf[*have] = chunk[0];
                    *have += 1;
                    chunk = &chunk[1..];
                    let Some(len) = declared_length(&buf[..*have]) else {
                        continue;
                    };
                    if len > self.limit.max() as u64 {
                        self.state = State::Refused;
                        return false;
                    }
                    self.state = if len == 0 {
                        State::Header {
                            buf: [0; MAX_HEADER],
                            have: 0,
                        }
                    } else {
                        State::Payload { remaining: len }
                    };
                }
            }
        }
        true
    }
}

/// The payload length of a frame whose header is `header`, once all of the
/// header is there.
fn declared_length(header: &[u8]) -> Option<u64> {
    if header.len() < 2 {
        return None;
    }
    let masked = header[1] & 0x80 != 0;
    let short = header[1] & 0x7f;
    let ext = match short {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let full = 2 + ext + if masked { 4 } else { 0 };
    if header.len() < full {
        return None;
    }
    Some(match short {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&header[2..10]);
            u64::from_be_bytes(bytes)
        }
        n => u64::from(n),
    })
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) if matches!(this.state, State::Refused) => {
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Ok(chunk))) => {
                if this.inspect(&chunk) {
                    Poll::Ready(Some(Ok(chunk)))
                } else {
                    this.limit.oversized.set(true);
                    Poll::Ready(Some(Err(PayloadError::Overflow)))
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max: usize) -> FrameGuard<futures_util::stream::Empty<Result<Bytes, PayloadError>>> {
        FrameGuard::new(futures_util::stream::empty(), FrameLimit::new(max))
    }

    fn masked_frame(len: usize) -> Vec<u8> {
        let mut frame = vec![0x81];
        match len {
            0..=125 => frame.push(0x80 | len as u8),
            126..=65535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend(std::iter::repeat_n(b'x', len));
        frame
    }

    #[test]
    fn frames_under_the_limit_pass_in_any_chunking() {
        let stream: Vec<u8> = [0, 5, 125, 126, 300, 1000]
            .iter()
            .flat_map(|&n| masked_frame(n))
            .collect();
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let mut g = guard(1000);
            for piece in stream.chunks(chunk) {
                assert!(g.inspect(piece), "chunk size {chunk}");
            }
            assert!(matches!(g.state, State::Header { have: 0, .. }));
        }
    }

    #[test]
    fn an_oversized_header_is_refused_before_its_payload() {
        let frame = masked_frame(70_000);
        let mut g = guard(65_536);
        // Only the header (2 + 8 + 4 bytes) is needed to refuse it.
        assert!(!g.inspect(&frame[..14]));
        let mut g = guard(65_536);
        assert!(g.inspect(&masked_frame(10)));
        assert!(!g.inspect(&[0x81, 0x80 | 127, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn a_raised_limit_holds_from_the_next_frame() {
        let mut g = guard(65_536);
        assert!(g.inspect(&masked_frame(1000)));
        g.limit.set(100_000);
        assert!(g.inspect(&masked_frame(70_000)));
        assert!(!g.inspect(&masked_frame(100_001)[..14]));
    }
}
