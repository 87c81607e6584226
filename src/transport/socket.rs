//! The connections a WebSocket runs over: plain TCP, or TLS over TCP.
//!
//! The transport owns its socket once the upgrade is answered (see
//! [`crate::transport::websocket`]), reading it from the session and writing
//! it from the writer: it needs the connection in two halves, and the TCP
//! connection underneath for its options and to cut it off. [`Socket`] is
//! that, and the transport is generic over it, so the plain TCP path is the
//! same code as before TLS existed (tokio's own halves, no extra copy, no
//! box, no lock): only a TLS connection pays for sharing one rustls state
//! between its halves.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_tls::accept::rustls_0_23::TlsStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// A connection an upgraded WebSocket runs over.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + 'static {
    /// The half the session reads.
    type Input: AsyncRead + Unpin + 'static;
    /// The half the writer writes.
    type Output: SocketOutput;

    /// The TCP connection underneath.
    fn tcp(&self) -> &TcpStream;

    fn split(self) -> (Self::Input, Self::Output);
}

/// The half of a [`Socket`] the writer owns.
pub trait SocketOutput: AsyncWrite + Unpin + 'static {
    /// Shuts the TCP connection down both ways at once, so the reading
    /// half ends too (the writer gives up on a failed socket).
    fn cut_off(&self) -> io::Result<()>;
}

impl Socket for TcpStream {
    type Input = OwnedReadHalf;
    type Output = OwnedWriteHalf;

    fn tcp(&self) -> &TcpStream {
        self
    }

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl SocketOutput for OwnedWriteHalf {
    fn cut_off(&self) -> io::Result<()> {
        socket2::SockRef::from(self.as_ref()).shutdown(Shutdown::Both)
    }
}

/// A TLS connection: one rustls state that both halves use (reading may
/// have to answer the peer, and both directions share the record layer).
type Tls = TlsStream<TcpStream>;

impl Socket for Tls {
    type Input = TlsInput;
    type Output = TlsOutput;

    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    fn split(self) -> (TlsInput, TlsOutput) {
        let shared = Rc::new(RefCell::new(self));
        (TlsInput(shared.clone()), TlsOutput(shared))
    }
}

/// The reading half of a TLS connection.
///
/// Both halves live on the connection's worker thread (`Rc` keeps them
/// there) and each borrows the stream only for the length of one poll,
/// which never polls the other half: a borrow never meets another.
pub struct TlsInput(Rc<RefCell<Tls>>);

/// The writing half of a TLS connection; see [`TlsInput`].
pub struct TlsOutput(Rc<RefCell<Tls>>);

impl AsyncRead for TlsInput {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    /// Through rustls's writer: the frames become records together, and
    /// the records leave in one vectored write.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    /// Sends close_notify, then a FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_shutdown(cx)
    }
}

impl SocketOutput for TlsOutput {
    fn cut_off(&self) -> io::Result<()> {
        socket2::SockRef::from(self.0.borrow().tcp()).shutdown(Shutdown::Both)
    }
}
