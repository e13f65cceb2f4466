//! Request bodies as the guest gets them. A small body (a manifest, a small
//! blob or chunk) is read whole by the host before the request takes a slot,
//! so a client that stalls it holds a connection but no instance. A larger
//! one streams into the guest, and fails once the client has sent nothing for
//! the body timeout; the guest then sees a stream error and the write fails,
//! so nothing half-sent is published.

use crate::shutdown::{self, Phase};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use wasmtime_wasi_http::Error;

/// Bodies up to this size are read by the host before the request is admitted.
pub const BUFFER_LIMIT: u64 = 64 << 10;

pub type GuestBody = UnsyncBoxBody<Bytes, Error>;

/// A body that fails when no frame arrives for `idle` while it is being read.
/// The clock runs only while the reader waits on the client: a reader that
/// is busy elsewhere (writing to disk) does not use up the client's time.
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration, timed_out: Arc<AtomicBool>) -> IdleTimeout<B> {
        IdleTimeout {
            inner,
            idle,
            sleep: None,
            timed_out,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Error>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        // Set before the error is seen, so whoever answers
                        // the request knows why its body failed.
                        this.timed_out.store(true, Ordering::SeqCst);
                        Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that fails once the server's drain has timed out
/// ([`Phase::CutOff`]), even while the client is still sending, so that its
/// request is answered before the process ends rather than cut off bare.
pub struct CutOff<B> {
    inner: B,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
    was_cut: Arc<AtomicBool>,
}

impl<B> CutOff<B> {
    pub fn new(inner: B, phase: watch::Receiver<Phase>, was_cut: Arc<AtomicBool>) -> CutOff<B> {
        CutOff {
            inner,
            cut: Box::pin(shutdown::reached(phase, Phase::CutOff)),
            was_cut,
        }
    }
}

impl<B> Body for CutOff<B>
where
    B: Body<Data = Bytes, Error = Error> + Unpin,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        // Checked first: a client that sends without pause is cut off too.
        if this.was_cut.load(Ordering::SeqCst) || this.cut.as_mut().poll(cx).is_ready() {
            // Set before the error is seen, as with the idle timeout.
            this.was_cut.store(true, Ordering::SeqCst);
            return Poll::Ready(Some(Err(Error::ConnectionTerminated)));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body whose data bytes are added to a counter as they pass
/// (`/metrics`). Unlike `map_frame`, it keeps the inner body's size hint,
/// which decides whether a request body is small enough to read first and
/// gives a response its length.
pub struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, count: Arc<AtomicU64>) -> Counted<B> {
        Counted { inner, count }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a streamed request body goes when the guest drops it unread
/// (a refusal before the upload is read, say), so the host can drop it
/// only once the response has gone out. Dropped earlier, an HTTP/2 stream
/// is reset (CANCEL) before its answer is sent, and the client sees a
/// stream error instead of the 401 or 404 it was given.
pub type Unread = Arc<std::sync::Mutex<Option<Box<dyn Send>>>>;

/// A streamed request body that leaves what is left of it in [`Unread`]
/// when dropped before its end.
struct Kept<B: Send + 'static> {
    inner: Option<B>,
    unread: Unread,
}

impl<B: Body<Data = Bytes, Error = Error> + Send + Unpin + 'static> Body for Kept<B> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match self.get_mut().inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl<B: Send + 'static> Drop for Kept<B> {
    fn drop(&mut self) {
        if let (Some(b), Ok(mut slot)) = (self.inner.take(), self.unread.lock()) {
            *slot = Some(Box::new(b));
        }
    }
}

/// A response body that holds the request's unread body (whenever the
/// guest lets go of it) until it is itself dropped, after the last byte
/// went out.
pub struct Holding<B> {
    inner: B,
    _unread: Unread,
}

impl<B> Holding<B> {
    pub fn new(inner: B, unread: Unread) -> Holding<B> {
        Holding {
            inner,
            _unread: unread,
        }
    }
}

impl<B: Body + Unpin> Body for Holding<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request ready for the guest.
pub struct Prepared {
    pub req: hyper::Request<GuestBody>,
    /// Whether its body streams into the guest (and may stall there).
    pub streams: bool,
    /// Set once its body failed for want of bytes from the client.
    pub timed_out: Arc<AtomicBool>,
    /// Set once its body was cut off at the end of the server's drain.
    pub cut_off: Arc<AtomicBool>,
    /// What the guest left unread of a streamed body.
    pub unread: Unread,
}

pub enum BodyFailure {
    /// The client sent nothing for the body timeout.
    TimedOut,
    /// The server's drain timed out while the body was being read.
    CutOff,
    /// The body ended early or broke (the client went away, say).
    Failed(Error),
}

/// Read a small body whole (within the idle timeout), or wrap a large one
/// (or one of unknown length) to stream with it. Either fails at the
/// server's cut-off (`phase`).
pub async fn prepare(
    req: hyper::Request<Incoming>,
    idle: Duration,
    phase: watch::Receiver<Phase>,
    received: Arc<AtomicU64>,
) -> Result<Prepared, BodyFailure> {
    let (parts, body) = req.into_parts();
    // Counted as it arrives (`/metrics`), whatever then becomes of it.
    let body = Counted::new(body, received);
    let timed_out = Arc::new(AtomicBool::new(false));
    let cut_off = Arc::new(AtomicBool::new(false));
    let unread = Unread::default();
    let body = IdleTimeout::new(body, idle, timed_out.clone());
    let body = CutOff::new(body, phase, cut_off.clone());
    let small = body.size_hint().exact().is_some_and(|n| n <= BUFFER_LIMIT);
    let body = if small {
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) if cut_off.load(Ordering::SeqCst) => return Err(BodyFailure::CutOff),
            Err(_) if timed_out.load(Ordering::SeqCst) => return Err(BodyFailure::TimedOut),
            Err(e) => return Err(BodyFailure::Failed(e)),
        };
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync()
    } else {
        Kept {
            inner: Some(body),
            unread: unread.clone(),
        }
        .boxed_unsync()
    };
    Ok(Prepared {
        req: hyper::Request::from_parts(parts, body),
        streams: !small,
        timed_out,
        cut_off,
        unread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    /// A body fed by hand, one frame at a time.
    struct Fed(mpsc::UnboundedReceiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    fn poll_once(body: &mut IdleTimeout<Fed>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(body).poll_frame(&mut cx)
    }

    #[test]
    fn the_cut_off_fails_a_body_even_while_bytes_keep_coming() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, rx) = mpsc::unbounded_channel();
            let (phase, watching) = watch::channel(Phase::Serving);
            let flag = Arc::new(AtomicBool::new(false));
            let inner = IdleTimeout::new(Fed(rx), Duration::from_secs(60), Default::default());
            let mut body = CutOff::new(inner, watching, flag.clone());
            tx.send(Bytes::from_static(b"a")).unwrap();
            let first = body.frame().await;
            assert!(matches!(first, Some(Ok(_))), "{first:?}");
            // Draining is not the cut-off: bodies go on.
            phase.send_replace(Phase::Draining);
            tx.send(Bytes::from_static(b"b")).unwrap();
            let second = body.frame().await;
            assert!(matches!(second, Some(Ok(_))), "{second:?}");
            assert!(!flag.load(Ordering::SeqCst));
            phase.send_replace(Phase::CutOff);
            tx.send(Bytes::from_static(b"c")).unwrap();
            let cut = body.frame().await;
            assert!(
                matches!(cut, Some(Err(Error::ConnectionTerminated))),
                "{cut:?}"
            );
            assert!(flag.load(Ordering::SeqCst));
            let again = body.frame().await;
            assert!(matches!(again, Some(Err(_))), "{again:?}");
        });
    }

    #[test]
    fn the_clock_runs_only_while_the_reader_waits() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let idle = Duration::from_millis(100);
            let (tx, rx) = mpsc::unbounded_channel();
            let flag = Arc::new(AtomicBool::new(false));
            let mut body = IdleTimeout::new(Fed(rx), idle, flag.clone());
            tx.send(Bytes::from_static(b"a")).unwrap();
            assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Ok(_)))));
            // The reader is busy for longer than the timeout, then waits:
            // the client's time starts now, not at the last frame.
            tokio::time::sleep(idle * 3).await;
            assert!(poll_once(&mut body).is_pending());
            tx.send(Bytes::from_static(b"b")).unwrap();
            assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Ok(_)))));
            assert!(!flag.load(Ordering::SeqCst));
            // Nothing more comes: the wait ends in a timeout, and says so.
            let end = body.frame().await;
            assert!(
                matches!(end, Some(Err(Error::ConnectionReadTimeout))),
                "{end:?}"
            );
            assert!(flag.load(Ordering::SeqCst));
        });
    }

    /// The counter must not hide the length: `prepare` reads a body whole
    /// only when its exact size is known, and once a wrapper lost it every
    /// body streamed into the guest (an HTTP/2 refusal then reset its stream).
    #[test]
    fn counting_keeps_the_size_and_counts_every_byte() {
        let count = Arc::new(AtomicU64::new(0));
        let body = Counted::new(
            Full::new(Bytes::from_static(b"twelve bytes")),
            count.clone(),
        );
        assert_eq!(body.size_hint().exact(), Some(12));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got = rt.block_on(body.collect()).unwrap().to_bytes();
        assert_eq!(&got[..], b"twelve bytes");
        assert_eq!(count.load(Ordering::Relaxed), 12);
    }
}
