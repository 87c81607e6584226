//! A WebSocket client that keeps sending whatever the gateway does: its
//! writing half runs on its own task and never reads, its reading half only
//! reads. A library client stops sending once it reads a close frame; this
//! one is the client that has not read it yet (or never will), the one whose
//! close frame is lost if the gateway resets the connection under it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::PATIENCE;

/// A masked client frame (FIN set) with opcode `op`.
pub fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut wire = header(op, payload.len() as u64);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    wire.extend_from_slice(&mask);
    wire.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    wire
}

/// A masked text frame.
pub fn text(payload: &str) -> Vec<u8> {
    frame(0x1, payload.as_bytes())
}

/// The first two (to ten) bytes of a client frame announcing `len` bytes,
/// without the mask.
fn header(op: u8, len: u64) -> Vec<u8> {
    let mut wire = vec![0x80 | op];
    match len {
        0..=125 => wire.push(0x80 | len as u8),
        126..=65_535 => {
            wire.push(0x80 | 126);
            wire.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            wire.push(0x80 | 127);
            wire.extend_from_slice(&len.to_be_bytes());
        }
    }
    wire
}

/// The header and mask of a masked text frame announcing `len` bytes, for a
/// client that then sends the payload slowly.
pub fn text_header(len: u64) -> Vec<u8> {
    let mut wire = header(0x1, len);
    wire.extend_from_slice(&[0, 0, 0, 0]);
    wire
}

pub struct Flood {
    input: OwnedReadHalf,
    output: Option<OwnedWriteHalf>,
    /// Bytes read past the last frame parsed.
    buf: Vec<u8>,
    /// Bytes the sending task has written.
    pub sent: Arc<AtomicU64>,
    sender: Option<JoinHandle<()>>,
}

impl Flood {
    /// Connects to `path` and completes the upgrade.
    pub async fn connect(addr: SocketAddr, path: &str) -> Flood {
        Self::upgrade(
            TcpStream::connect(addr).await.expect("connects"),
            addr,
            path,
        )
        .await
    }

    /// As [`Flood::connect`], with a small fixed kernel receive buffer, so
    /// that not reading backs the gateway up at once.
    pub async fn connect_with_recv_buffer(addr: SocketAddr, path: &str, bytes: u32) -> Flood {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connects");
        Self::upgrade(stream, addr, path).await
    }

    async fn upgrade(stream: TcpStream, addr: SocketAddr, path: &str) -> Flood {
        let (input, mut output) = stream.into_split();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        output.write_all(request.as_bytes()).await.expect("writes");
        let mut flood = Flood {
            input,
            output: Some(output),
            buf: Vec::new(),
            sent: Arc::new(AtomicU64::new(0)),
            sender: None,
        };
        let end = loop {
            if let Some(end) = flood.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            assert!(flood.fill().await, "the upgrade was not answered");
        };
        let head = String::from_utf8_lossy(&flood.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        flood.buf.drain(..end);
        flood
    }

    /// Reads more from the socket; false at EOF.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(PATIENCE, self.input.read(&mut chunk))
            .await
            .expect("the gateway sent nothing within PATIENCE")
            .unwrap_or_else(|e| panic!("the connection failed while reading: {e}"));
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Sends bytes before the flood starts.
    pub async fn send(&mut self, wire: &[u8]) {
        let output = self.output.as_mut().expect("not flooding yet");
        output.write_all(wire).await.expect("writes");
    }

    /// From now on the client writes `first` once, then `repeat` over and
    /// over, `every` apart (as fast as the socket takes them when zero), and
    /// never stops by itself: only a failed write ends it.
    pub fn flood(&mut self, first: Vec<u8>, repeat: Vec<u8>, every: Duration) {
        let mut output = self.output.take().expect("floods once");
        let sent = self.sent.clone();
        self.sender = Some(tokio::spawn(async move {
            if output.write_all(&first).await.is_err() {
                return;
            }
            sent.fetch_add(first.len() as u64, Ordering::Relaxed);
            loop {
                if output.write_all(&repeat).await.is_err() {
                    return;
                }
                sent.fetch_add(repeat.len() as u64, Ordering::Relaxed);
                if every.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(every).await;
                }
            }
        }));
    }

    /// Stops the flood; the connection stays open.
    pub fn stop(&mut self) {
        if let Some(sender) = self.sender.take() {
            sender.abort();
        }
    }

    /// Reads past everything to the close frame: its code and reason; or
    /// `None` when the connection ends (EOF or reset) before one arrives.
    /// Panics if neither happens within `patience`.
    pub async fn close_or_end(&mut self, patience: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            // Megabytes of pongs can come first: drained once per read.
            let mut at = 0;
            while let Some((op, payload, used)) = parse(&self.buf[at..]) {
                at += used;
                if op == 0x8 {
                    self.buf.drain(..at);
                    assert!(payload.len() >= 2, "a close frame without a code");
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
                }
            }
            self.buf.drain(..at);
            let mut chunk = [0u8; 64 * 1024];
            let read = tokio::time::timeout_at(deadline, self.input.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("neither closed nor ended within {patience:?}"));
            match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next frame from the gateway: opcode and payload (server frames
    /// are not masked). Panics if the connection ends or fails first.
    pub async fn next_frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some((op, payload, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return (op, payload);
            }
            assert!(
                self.fill().await,
                "the connection ended without a close frame"
            );
        }
    }

    /// Reads past text frames, pings and pongs to the close frame: its code
    /// and reason. Panics unless it comes within [`PATIENCE`], however
    /// many frames come first.
    pub async fn expect_close(&mut self) -> (u16, String) {
        self.close_or_end(PATIENCE)
            .await
            .expect("the connection ended without a close frame")
    }

    /// Waits up to `patience` for the flood to end on a failed write (the
    /// gateway closed its socket: the kernel answered the next segment
    /// with a reset); returns when it was seen to end, `None` if the client
    /// is still sending.
    pub async fn writes_fail_within(&mut self, patience: Duration) -> Option<Instant> {
        let sender = self.sender.as_mut().expect("flooding");
        // The task's own result says nothing more: it ends only on a failed write.
        let _ = tokio::time::timeout(patience, sender).await.ok()?;
        self.sender = None;
        Some(Instant::now())
    }

    /// Whether the flood was still going when the close frame was read:
    /// bytes written after that moment prove the client kept sending.
    pub async fn still_sending(&self) -> bool {
        let before = self.sent.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.sent.load(Ordering::Relaxed) > before
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            sender.abort();
        }
    }
}

/// One complete server frame at the start of `buf`: opcode, payload, and
/// the bytes it took.
pub fn parse(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let op = buf[0] & 0x0f;
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(bytes), 10)
        }
        126 | 127 => return None,
        n => (u64::from(n), 2),
    };
    let end = start + usize::try_from(len).ok()?;
    (buf.len() >= end).then(|| (op, buf[start..end].to_vec(), end))
}
