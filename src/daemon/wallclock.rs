//! Sleeping until a wall-clock instant, with one wake-up.
//!
//! tokio's timers run on the monotonic clock, which stops during suspend, and its timer wheel
//! reaches a far deadline in several steps (a 60 s sleep wakes the thread three times). A
//! Linux `timerfd` on `CLOCK_REALTIME`, armed with an absolute time, fires once, exactly when
//! the wall clock reaches the deadline, including after a suspend; with
//! `TFD_TIMER_CANCEL_ON_SET` it also fires early when someone sets the clock, so the caller
//! re-reads it instead of waking late. Where timerfd is unavailable, a capped tokio sleep
//! stands in.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use time::OffsetDateTime;
use tokio::io::unix::AsyncFd;

/// Without timerfd, sleep at most this long before looking at the wall clock again.
const FALLBACK_CAP: Duration = Duration::from_secs(60);

struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct WallTimer {
    fd: Option<AsyncFd<Fd>>,
}

impl WallTimer {
    /// Must be called inside a tokio runtime.
    pub fn new() -> WallTimer {
        let fd = TimerFd::new(
            ClockId::CLOCK_REALTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .ok()
        .and_then(|t| {
            // SAFETY: `Fd` owns the TimerFd, whose descriptor stays open and the same for as
            // long as the AsyncFd holds it (it is dropped with it).
            unsafe { AsyncFd::register_with_interest(Fd(t), tokio::io::Interest::READABLE) }.ok()
        });
        if fd.is_none() {
            tracing::debug!("no timerfd; waking at least once a minute to check the clock");
        }
        WallTimer { fd }
    }

    /// Resolves when the wall clock reaches `deadline`, or earlier when the clock is set;
    /// callers re-read the clock either way.
    pub async fn sleep_until(&self, deadline: OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        if deadline <= now {
            return;
        }
        if let Some(fd) = &self.fd {
            if Self::arm(fd, deadline).is_ok() {
                loop {
                    let Ok(mut guard) = fd.readable().await else {
                        break;
                    };
                    match nix::unistd::read(&fd.get_ref().0, &mut [0u8; 8]) {
                        Err(Errno::EAGAIN) => guard.clear_ready(),
                        // Fired, or ECANCELED: the clock was set.
                        _ => return,
                    }
                }
            }
        }
        let left: Duration = (deadline - now).try_into().unwrap_or_default();
        tokio::time::sleep(left.min(FALLBACK_CAP)).await;
    }

    fn arm(fd: &AsyncFd<Fd>, deadline: OffsetDateTime) -> nix::Result<()> {
        let nanos = deadline.unix_timestamp_nanos().max(1);
        let spec = TimeSpec::new(
            (nanos / 1_000_000_000) as i64,
            (nanos % 1_000_000_000) as i64,
        );
        fd.get_ref().0.set(
            Expiration::OneShot(spec),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET,
        )
    }
}

impl Default for WallTimer {
    fn default() -> Self {
        WallTimer::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_at_the_wall_clock_deadline() {
        let timer = WallTimer::new();
        assert!(timer.fd.is_some(), "timerfd is available on Linux");
        let start = std::time::Instant::now();
        let deadline = OffsetDateTime::now_utc() + Duration::from_millis(300);
        timer.sleep_until(deadline).await;
        assert!(OffsetDateTime::now_utc() >= deadline);
        assert!(start.elapsed() < Duration::from_secs(5));
        // Re-armed for a second deadline on the same descriptor.
        let deadline = OffsetDateTime::now_utc() + Duration::from_millis(100);
        timer.sleep_until(deadline).await;
        assert!(OffsetDateTime::now_utc() >= deadline);
    }

    #[tokio::test]
    async fn a_past_deadline_returns_at_once() {
        let timer = WallTimer::new();
        let start = std::time::Instant::now();
        timer
            .sleep_until(OffsetDateTime::now_utc() - Duration::from_secs(10))
            .await;
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}
