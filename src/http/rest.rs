//! How long a connection thread may keep its core without a rest: one that has used
//! [`MOST_HELD`] of CPU time since it last slept gives the core up (`sched_yield`)
//! between two requests.
//!
//! A connection thread sleeps when none of its connections has a request waiting. Under
//! a load that keeps every core busy, one of them may always have a request waiting:
//! the thread then never sleeps, and the kernel takes the core back only at its tick
//! (4 ms at `HZ=250`). Every other thread waiting for that core waits that long: the
//! clients on the same host, the other connection thread if the two share a core, the
//! director's own probes and replication (whose round trips feed the routing). Seen in
//! `scripts/bench.sh`: a tenth of the redirects waited 3 ms or more, most waits one tick.
//! Yielding after [`MOST_HELD`] lets them run sooner; a thread that finds its
//! connections idle sleeps anyway, and then nothing here happens.
//!
//! The runtime's park hooks tell when the thread slept (a park that lasted at least
//! [`RESTED`]: one that finds events waiting returns at once). What counts is the CPU
//! time the thread used since: time it spent waiting while the kernel ran something
//! else was already a rest for the others. The thread's CPU clock is a system call, so
//! it is read only after a rest and when the wall clock says [`MOST_HELD`] could have
//! been used, not per request.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// A park at least this long was a sleep (a park that finds events ready returns in a
/// microsecond or two; a sleep and a wake take longer).
pub(super) const RESTED: Duration = Duration::from_micros(10);

/// The most CPU time a connection thread uses without a rest before it yields: well
/// under a kernel tick (1 ms at `HZ=1000`, 4 ms at `HZ=250`), and long enough that a
/// thread that keeps being busy yields at most once per millisecond.
pub(super) const MOST_HELD: Duration = Duration::from_millis(1);

/// When the thread parked, and when it last rested.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Rest {
    parked_at: Option<Instant>,
    /// The last rest: when, and the CPU time the thread had used by then.
    rested: Option<(Instant, Duration)>,
    /// Not before this is the CPU clock read again: the thread cannot have used
    /// [`MOST_HELD`] since its rest sooner.
    next_look: Option<Instant>,
}

impl Rest {
    /// The thread parks at `now`.
    pub(super) fn parking(&mut self, now: Instant) {
        self.parked_at = Some(now);
    }

    /// The thread is back from a park at `now`: a rest if it was away [`RESTED`] (then
    /// `cpu`, the thread's CPU time, is read).
    pub(super) fn unparked(&mut self, now: Instant, cpu: impl FnOnce() -> Duration) {
        if let Some(at) = self.parked_at.take() {
            if now.saturating_duration_since(at) >= RESTED {
                self.rested = Some((now, cpu()));
                self.next_look = None;
            }
        }
    }

    /// True if the thread, between two requests at `now`, has used [`MOST_HELD`] of CPU
    /// time (`cpu`, read only when it may have) without a rest: it should yield, and the
    /// yield counts as its rest.
    pub(super) fn should_yield(&mut self, now: Instant, cpu: impl FnOnce() -> Duration) -> bool {
        let Some((at, used_then)) = self.rested else {
            // The first request of this thread: held from now.
            self.rested = Some((now, cpu()));
            return false;
        };
        // CPU time never runs ahead of the wall clock.
        if now < self.next_look.unwrap_or(at + MOST_HELD) {
            return false;
        }
        let used_now = cpu();
        let used = used_now.saturating_sub(used_then);
        if used >= MOST_HELD {
            self.rested = Some((now, used_now));
            self.next_look = None;
            true
        } else {
            // Off its core part of the time: not held long enough yet.
            self.next_look = Some(now + (MOST_HELD - used));
            false
        }
    }
}

thread_local! {
    static REST: Cell<Rest> = Cell::new(Rest::default());
}

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// The runtime's `on_thread_park` hook.
pub(super) fn parking() {
    update(|rest| rest.parking(Instant::now()));
}

/// The runtime's `on_thread_unpark` hook.
pub(super) fn unparked() {
    update(|rest| rest.unparked(Instant::now(), thread_cpu));
}

/// Yields the core if this thread has held it [`MOST_HELD`] without a rest (see the
/// module documentation); true if it yielded. For the connection loop, between requests.
pub(super) fn yield_if_held(now: Instant) -> bool {
    let mut held = false;
    update(|rest| held = rest.should_yield(now, thread_cpu));
    if held {
        std::thread::yield_now();
    }
    held
}

fn update(change: impl FnOnce(&mut Rest)) {
    let _ = REST.try_with(|cell| {
        let mut rest = cell.get();
        change(&mut rest);
        cell.set(rest);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// A CPU clock that must not be read.
    fn unread() -> Duration {
        panic!("the CPU clock was read where the wall clock rules it out")
    }

    #[test]
    fn a_thread_that_keeps_its_core_yields_once_per_most_held() {
        let start = Instant::now();
        let mut rest = Rest::default();
        assert!(
            !rest.should_yield(start, || us(0)),
            "the first request starts the count"
        );
        // On its core all the time (CPU time = wall time); parks that find events ready
        // at once are no rest.
        let mut yields = Vec::new();
        for step in 1..=50u64 {
            let now = start + us(step * 100);
            rest.parking(now);
            rest.unparked(now + us(2), unread);
            if rest.should_yield(now + us(3), || us(step * 100 + 3)) {
                yields.push(step * 100);
            }
        }
        assert_eq!(yields, [1000, 2000, 3000, 4000, 5000]);
    }

    #[test]
    fn a_thread_that_sleeps_between_requests_never_yields() {
        let start = Instant::now();
        let mut rest = Rest::default();
        assert!(!rest.should_yield(start, || us(0)));
        for step in 1..=100u64 {
            let now = start + us(step * 100);
            rest.parking(now);
            rest.unparked(now + us(50), || us(step * 50));
            assert!(!rest.should_yield(now + us(60), unread), "step {step}");
        }
    }

    #[test]
    fn time_off_the_core_is_not_held() {
        let start = Instant::now();
        let mut rest = Rest::default();
        assert!(!rest.should_yield(start, || us(0)));
        // 1.5 ms since the start, but 400 µs of it on the core: no yield, and no look
        // at the CPU clock for the 600 µs it would take to reach the limit.
        assert!(!rest.should_yield(start + us(1500), || us(400)));
        assert!(!rest.should_yield(start + us(2000), unread));
        assert!(!rest.should_yield(start + us(2100), || us(900)));
        assert!(rest.should_yield(start + us(2200), || us(1000)));
        // The yield is a rest: the count starts again.
        assert!(!rest.should_yield(start + us(3100), unread));
    }

    #[test]
    fn one_sleep_starts_the_count_again() {
        let start = Instant::now();
        let mut rest = Rest::default();
        assert!(!rest.should_yield(start, || us(0)));
        assert!(!rest.should_yield(start + us(900), unread));
        rest.parking(start + us(950));
        rest.unparked(start + us(950) + RESTED, || us(950));
        assert!(!rest.should_yield(start + us(1500), unread));
        assert!(rest.should_yield(start + us(2100), || us(2000)));
    }

    #[test]
    fn an_unpark_without_a_park_is_no_rest() {
        let start = Instant::now();
        let mut rest = Rest::default();
        assert!(!rest.should_yield(start, || us(0)));
        rest.unparked(start + us(500), unread);
        assert!(rest.should_yield(start + us(1001), || us(1001)));
    }
}
