//! A listener for the test fakes (FCM, Gemini) whose connections close when
//! the fake is dropped, so no kept-alive connection outlives its test.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub struct ShutdownListener {
    pub listener: TcpListener,
    pub shutdown: CancellationToken,
}

impl axum::serve::Listener for ShutdownListener {
    type Io = ShutdownIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    let io = ShutdownIo {
                        stream,
                        shutdown: Box::pin(self.shutdown.clone().cancelled_owned()),
                        closed: false,
                    };
                    return (io, addr);
                }
                // Like axum's own listener: transient errors (e.g. too many
                // open files) are waited out.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection that reads EOF and fails writes once the fake shuts down, so
/// that hyper closes it even when it is idle in a keep-alive pool.
pub struct ShutdownIo {
    stream: TcpStream,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    closed: bool,
}

impl ShutdownIo {
    fn closed(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed && self.shutdown.as_mut().poll(cx).is_ready() {
            self.closed = true;
        }
        self.closed
    }
}

impl AsyncRead for ShutdownIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed(cx) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ShutdownIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
