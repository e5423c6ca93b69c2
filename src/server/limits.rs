//! What keeps the server inside its memory budget whatever clients do: a budget for the bytes
//! of reviews in flight (request bodies, the review's working memory, answers not yet sent),
//! deadlines on connection I/O, and a per-connection watch on answers nobody reads.
//!
//! The budget, with the caps in `server` (connections, streams, h2 windows), is what the
//! memory figure in docs/reliability.md adds up; the deploy's memory limit is set from it.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::engine::admission::MAX_BODY_BYTES;

/// Reviews whose declared body is at most this size (every pod kube-apiserver sends in
/// practice) draw on their own pools, so that large reviews can never starve them.
pub const SMALL_REVIEW_BYTES: usize = 256 * 1024;
/// A review holds its body and, while it runs, this many times the body's size more:
/// measured, a 4 MiB body of tiny containers peaks at ~11x (each 13-byte list entry becomes
/// a 72-byte struct, and a growing list briefly holds twice that).
pub const WORK_FACTOR: usize = 12;

/// Bytes of reviews in flight, in two pools per size class: bodies (their declared length,
/// or each growth of one without), and the working memory (then the answer) of reviews whose
/// body is complete.
///
/// Two pools, not one, so that nothing waits while holding what another waiter needs: a body
/// is reserved in one step, and a complete body waits only for working memory, which is held
/// only by reviews that are running and will give it back.
pub struct Pools {
    pub body: Budget,
    pub work: Budget,
}

impl Pools {
    /// Small reviews: 48 bodies of the largest small size at once (slow clients declaring
    /// 256 KiB hold 256 KiB each, and a pause of 2 s ends one), and working memory for ~110
    /// realistic (6 KB) reviews, at least 2 of the largest small ones.
    pub fn small() -> Pools {
        Pools::new(SMALL_BODY_BYTES, SMALL_WORK_BYTES)
    }

    /// Everything else: exactly one body of the largest size (4 MiB) and its working
    /// memory; large reviews take turns.
    pub fn large() -> Pools {
        Pools::new(LARGE_BODY_BYTES, LARGE_WORK_BYTES)
    }

    fn new(body: usize, work: usize) -> Pools {
        Pools {
            body: Budget::new(body),
            work: Budget::new(work),
        }
    }
}

const SMALL_BODY_BYTES: usize = 12 << 20;
const SMALL_WORK_BYTES: usize = 8 << 20;
const LARGE_BODY_BYTES: usize = MAX_BODY_BYTES;
const LARGE_WORK_BYTES: usize = MAX_BODY_BYTES * WORK_FACTOR;

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// The budget for reviews in flight, in KiB.
#[derive(Clone)]
pub struct Budget(Arc<Semaphore>);

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        Budget(Arc::new(Semaphore::new(kib(bytes) as usize)))
    }

    /// Reserves `bytes`, waiting at most until `deadline`; `None` when the budget stays short.
    pub async fn reserve(
        &self,
        bytes: usize,
        deadline: tokio::time::Instant,
    ) -> Option<Reservation> {
        // The everyday case, room in the pool, without a timer or a waiting future.
        if let Ok(permit) = self.0.clone().try_acquire_many_owned(kib(bytes)) {
            return Some(Reservation(Some(permit)));
        }
        let sem = self.0.clone();
        let permit = tokio::time::timeout_at(deadline, sem.acquire_many_owned(kib(bytes)))
            .await
            .ok()?
            .ok()?;
        Some(Reservation(Some(permit)))
    }

    #[cfg(test)]
    fn available_kib(&self) -> usize {
        self.0.available_permits()
    }
}

/// Part of the budget, given back when dropped.
#[derive(Default)]
pub struct Reservation(Option<OwnedSemaphorePermit>);

impl Reservation {
    pub fn merge(&mut self, other: Reservation) {
        match (&mut self.0, other.0) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (_, None) => {}
        }
    }

    /// KiB held.
    pub fn kib(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Keeps `bytes` (rounded up to KiB) and gives the rest back.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = kib(bytes) as usize;
        if let Some(permit) = &mut self.0 {
            let extra = permit.num_permits().saturating_sub(keep);
            drop(permit.split(extra));
        }
    }
}

/// An answer's bytes with the budget they hold: the reservation goes back when hyper has
/// taken the bytes (sent, or the stream or connection is gone).
pub struct BudgetedBody {
    data: Option<Bytes>,
    _reservation: Reservation,
}

impl BudgetedBody {
    pub fn new(data: Vec<u8>, reservation: Reservation) -> BudgetedBody {
        BudgetedBody {
            data: Some(Bytes::from(data)),
            _reservation: reservation,
        }
    }
}

impl Body for BudgetedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.get_mut().data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// The answers of one connection that are not yet fully handed to hyper, by start time: a
/// client that does not read (an HTTP/2 window kept at zero) leaves them here, and the
/// connection is closed once the oldest passes the deadline.
#[derive(Default)]
pub struct Unsent {
    inner: Mutex<(u64, BTreeMap<u64, Instant>)>,
}

impl Unsent {
    fn add(self: &Arc<Self>) -> UnsentGuard {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let id = inner.0;
        inner.0 += 1;
        inner.1.insert(id, Instant::now());
        UnsentGuard {
            unsent: self.clone(),
            id,
        }
    }

    /// When the oldest unsent answer was made.
    pub fn oldest(&self) -> Option<Instant> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.1.values().min().copied()
    }
}

struct UnsentGuard {
    unsent: Arc<Unsent>,
    id: u64,
}

impl Drop for UnsentGuard {
    fn drop(&mut self) {
        let mut inner = self.unsent.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.1.remove(&self.id);
    }
}

/// A response body registered in its connection's [`Unsent`] until it ends or is dropped.
pub struct Tracked<B> {
    body: B,
    guard: Option<UnsentGuard>,
}

impl<B> Tracked<B> {
    pub fn new(body: B, unsent: &Arc<Unsent>) -> Tracked<B> {
        Tracked {
            body,
            guard: Some(unsent.add()),
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) {
            this.guard = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's I/O with two deadlines: the first `opening` bytes must arrive within
/// `opening_deadline` of the start (a client that completes the TLS handshake and then says
/// nothing, or too little for HTTP/2's preface to be recognized, is cut off), and a write
/// may not stay blocked longer than `write_stall` (a client that does not read: its socket
/// buffer is full).
pub struct DeadlineIo<T> {
    io: T,
    opening_left: usize,
    opening: Option<Pin<Box<Sleep>>>,
    write_stall: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> DeadlineIo<T> {
    pub fn new(io: T, opening: usize, opening_deadline: Duration, write_stall: Duration) -> Self {
        DeadlineIo {
            io,
            opening_left: opening,
            opening: Some(Box::pin(tokio::time::sleep(opening_deadline))),
            write_stall,
            stalled: None,
        }
    }

    /// A write or flush that is pending starts the stall clock (or fails once it has run
    /// out); one that completes stops it.
    fn stall_guard<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let write_stall = self.write_stall;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(write_stall)));
        if stalled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its answer in time",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some(opening) = &mut this.opening {
            if let Poll::Ready(Ok(())) = read {
                this.opening_left = this
                    .opening_left
                    .saturating_sub(buf.filled().len() - before);
                if this.opening_left == 0 {
                    this.opening = None;
                }
            } else if read.is_pending() && opening.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent no request in time",
                )));
            }
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.stall_guard(cx, polled)
    }

    // Passed through: without it, h2 writes each frame head and payload as its own TLS record.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.stall_guard(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.stall_guard(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn budget_reserves_waits_and_gives_back() {
        let budget = Budget::new(8 * 1024);
        let soon = || tokio::time::Instant::now() + Duration::from_millis(50);
        let mut a = budget.reserve(6 * 1024, soon()).await.unwrap();
        assert!(
            budget.reserve(4 * 1024, soon()).await.is_none(),
            "over budget"
        );
        a.shrink_to(1024);
        assert_eq!(budget.available_kib(), 7);
        a.merge(budget.reserve(2 * 1024, soon()).await.unwrap());
        assert_eq!(budget.available_kib(), 5);
        drop(a);
        assert_eq!(budget.available_kib(), 8);
    }

    #[tokio::test]
    async fn silent_clients_and_stalled_writes_fail_in_time() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = DeadlineIo::new(
            server,
            4,
            Duration::from_millis(50),
            Duration::from_millis(50),
        );
        let mut buf = [0u8; 8];
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // Enough opening bytes disarm the opening deadline.
        let (mut client2, server2) = tokio::io::duplex(64);
        let mut io2 = DeadlineIo::new(
            server2,
            4,
            Duration::from_millis(50),
            Duration::from_millis(50),
        );
        client2.write_all(b"PRI *").await.unwrap();
        assert_eq!(io2.read(&mut buf).await.unwrap(), 5);
        tokio::time::sleep(Duration::from_millis(80)).await;
        client2.write_all(b"x").await.unwrap();
        assert_eq!(io2.read(&mut buf).await.unwrap(), 1);
        // Nobody reads: the 64-byte pipe fills, the write stalls, then fails.
        let err = io2.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[test]
    fn unsent_answers_are_tracked_until_they_end() {
        let unsent = Arc::new(Unsent::default());
        let mut body = Tracked::new(
            BudgetedBody::new(b"answer".to_vec(), Reservation::default()),
            &unsent,
        );
        assert!(unsent.oldest().is_some());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(unsent.oldest().is_some(), "not ended yet");
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        assert!(unsent.oldest().is_none());
        let dropped = Tracked::new(BudgetedBody::new(vec![], Reservation::default()), &unsent);
        drop(dropped);
        assert!(unsent.oldest().is_none());
    }
}
