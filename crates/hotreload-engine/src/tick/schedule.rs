//! Fixed-rate tick deadlines that never drift.
//!
//! Deadline N is `start + N × period`, computed from the start, never from the
//! previous tick: a tick that starts late does not move the ones after it, so
//! a long run keeps wall-clock time. When the loop falls far behind (the
//! process was stopped, the machine slept) it skips the missed ticks instead
//! of bursting through them, and says so.

use std::time::{Duration, Instant};

pub struct Schedule {
    period: Duration,
    /// Deadline of tick 0.
    origin: Instant,
    /// Index of the next deadline on the grid.
    next_index: u64,
    max_behind: Duration,
    pub max_late: Duration,
    pub skipped: u64,
    /// When the most recent tick started.
    pub last_start: Option<Instant>,
}

/// Skipping, reported to the caller.
pub struct Skip {
    pub behind: Duration,
    pub ticks: u64,
}

impl Schedule {
    /// The first tick is due one period after `start`.
    pub fn new(period: Duration, start: Instant) -> Schedule {
        Schedule {
            period,
            origin: start + period,
            next_index: 0,
            // Up to this far behind, missed ticks run back to back; further
            // behind, they are skipped.
            max_behind: (period * 10).max(Duration::from_millis(250)),
            max_late: Duration::ZERO,
            skipped: 0,
            last_start: None,
        }
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    pub fn next_deadline(&self) -> Instant {
        self.deadline(self.next_index)
    }

    fn deadline(&self, index: u64) -> Instant {
        // `period * u32` would overflow after 2^32 ticks; nanoseconds in u128
        // cannot.
        let ns = self.period.as_nanos() * u128::from(index);
        self.origin + Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
    }

    /// Starts the grid again from `now` (after a pause): the next tick is due
    /// one period later, and the ticks the pause took are neither run nor
    /// counted as skipped. The deadlines stay on one grid, so the tick
    /// count and the elapsed time keep their meaning.
    pub fn restart(&mut self, now: Instant) {
        let grid = self.period.as_nanos() * u128::from(self.next_index);
        let back = Duration::from_nanos(grid.min(u64::MAX as u128) as u64);
        match (now + self.period).checked_sub(back) {
            Some(origin) => self.origin = origin,
            None => {
                self.origin = now + self.period;
                self.next_index = 0;
            }
        }
    }

    /// Moves past the deadlines missed by `now` without a report of its own
    /// (counted in `skipped`): for a gap something else already explained,
    /// a call the watchdog ended after its timeout. How many.
    pub fn pass_missed(&mut self, now: Instant) -> u64 {
        let behind = now.saturating_duration_since(self.next_deadline());
        let missed = (behind.as_nanos() / self.period.as_nanos()) as u64;
        self.next_index += missed;
        self.skipped += missed;
        missed
    }

    /// Records that a tick starts at `now` (at or after the next deadline) and
    /// moves on to the following deadline.
    pub fn start_tick(&mut self, now: Instant) -> Option<Skip> {
        let mut skip = None;
        let behind = now.saturating_duration_since(self.next_deadline());
        if behind > self.max_behind {
            let missed = (behind.as_nanos() / self.period.as_nanos()) as u64;
            self.next_index += missed;
            self.skipped += missed;
            skip = Some(Skip {
                behind,
                ticks: missed,
            });
        }
        let late = now.saturating_duration_since(self.next_deadline());
        self.max_late = self.max_late.max(late);
        self.next_index += 1;
        self.last_start = Some(now);
        skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Duration = Duration::from_millis(1);

    #[test]
    fn a_restart_puts_the_next_deadline_one_period_away() {
        let t0 = Instant::now();
        let mut s = Schedule::new(P, t0);
        s.start_tick(t0 + P);
        s.start_tick(t0 + 2 * P);
        let later = t0 + Duration::from_secs(5);
        s.restart(later);
        assert_eq!(s.next_deadline(), later + P);
        assert!(s.start_tick(later + P).is_none(), "no skip after a pause");
        assert_eq!(s.skipped, 0);
    }

    #[test]
    fn missed_deadlines_can_be_passed_quietly() {
        let t0 = Instant::now();
        let mut s = Schedule::new(P, t0);
        assert_eq!(s.pass_missed(t0 + P + Duration::from_micros(3_500)), 3);
        assert_eq!(s.next_deadline(), t0 + 4 * P);
        assert!(s.start_tick(t0 + 4 * P).is_none());
        assert_eq!(s.skipped, 3);
    }

    #[test]
    fn late_ticks_do_not_shift_later_deadlines() {
        let t0 = Instant::now();
        let mut s = Schedule::new(P, t0);
        assert_eq!(s.next_deadline(), t0 + P);
        // Tick 0 starts 0.7 ms late; tick 1 is still due at t0 + 2 ms.
        s.start_tick(t0 + P + Duration::from_micros(700));
        assert_eq!(s.next_deadline(), t0 + 2 * P);
        assert_eq!(s.max_late, Duration::from_micros(700));
    }

    #[test]
    fn a_little_behind_catches_up_far_behind_skips() {
        let t0 = Instant::now();
        let mut s = Schedule::new(P, t0);
        assert!(
            s.start_tick(t0 + 5 * P).is_none(),
            "4 ms behind: run the missed ticks"
        );
        assert_eq!(s.next_deadline(), t0 + 2 * P);
        let skip = s
            .start_tick(t0 + Duration::from_secs(2))
            .expect("far behind");
        assert!(skip.ticks > 1000);
        assert!(s.next_deadline() > t0 + Duration::from_secs(2) - P);
        assert!(s.next_deadline() <= t0 + Duration::from_secs(2) + P);
    }
}
