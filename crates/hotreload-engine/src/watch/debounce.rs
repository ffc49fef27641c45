//! The quiet period: many events, one build.
//!
//! A save is a burst of events (vim's backup rename is six of them; every
//! editor sequence measured on this kind of machine finished within ~3.3 ms).
//! A batch opens with the first settled event, and is released once no
//! relevant event came for the quiet period, or once it has waited the maximum
//! time, so that a file written without pause cannot hold builds back forever.
//!
//! Pure logic over instants passed in, so it is tested without sleeping.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How much an event says about a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strength {
    /// The file reached a new state: closed after writing, created, renamed,
    /// removed, or its metadata changed (poll mode's differences are all this).
    Settled,
    /// Data is being written (a bare modify). It can come before the bytes are
    /// all there, so it never opens a batch; it only keeps an open one waiting.
    Activity,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub paths: BTreeSet<PathBuf>,
    /// Events were lost: assume every watched file changed.
    pub rescan: bool,
}

pub struct Debouncer {
    quiet: Duration,
    max_wait: Duration,
    pending: Batch,
    opened_at: Option<Instant>,
    last_at: Option<Instant>,
}

impl Debouncer {
    pub fn new(quiet: Duration, max_wait: Duration) -> Debouncer {
        Debouncer {
            quiet,
            max_wait: max_wait.max(quiet),
            pending: Batch::default(),
            opened_at: None,
            last_at: None,
        }
    }

    pub fn note(&mut self, path: PathBuf, strength: Strength, at: Instant) {
        match strength {
            Strength::Settled => {
                self.pending.paths.insert(path);
                self.opened_at.get_or_insert(at);
                self.last_at = Some(at);
            }
            Strength::Activity => {
                if self.opened_at.is_some() {
                    self.pending.paths.insert(path);
                    self.last_at = Some(at);
                }
            }
        }
    }

    pub fn note_rescan(&mut self, at: Instant) {
        self.pending.rescan = true;
        self.opened_at.get_or_insert(at);
        self.last_at = Some(at);
    }

    /// When the open batch is due, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        let opened = self.opened_at?;
        let last = self.last_at.unwrap_or(opened);
        Some((last + self.quiet).min(opened + self.max_wait))
    }

    /// The open batch, if it is due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<Batch> {
        if self.deadline()? > now {
            return None;
        }
        self.opened_at = None;
        self.last_at = None;
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Duration = Duration::from_millis(20);

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn a_burst_becomes_one_batch_after_the_quiet_period() {
        let t = Instant::now();
        let mut d = Debouncer::new(Q, Duration::from_secs(1));
        for i in 0..20 {
            d.note(PathBuf::from("logic.c"), Strength::Settled, ms(t, i));
        }
        assert_eq!(d.deadline(), Some(ms(t, 39)));
        assert!(d.take_due(ms(t, 38)).is_none());
        let batch = d.take_due(ms(t, 39)).expect("due");
        assert_eq!(batch.paths.len(), 1);
        assert!(d.deadline().is_none());
    }

    #[test]
    fn activity_alone_opens_nothing_but_keeps_a_batch_waiting() {
        let t = Instant::now();
        let mut d = Debouncer::new(Q, Duration::from_secs(1));
        d.note(PathBuf::from("a"), Strength::Activity, t);
        assert!(d.deadline().is_none());
        d.note(PathBuf::from("a"), Strength::Settled, t);
        d.note(PathBuf::from("a"), Strength::Activity, ms(t, 15));
        assert_eq!(d.deadline(), Some(ms(t, 35)));
    }

    #[test]
    fn a_stream_without_pause_is_released_at_the_maximum_wait() {
        let t = Instant::now();
        let mut d = Debouncer::new(Q, Duration::from_millis(100));
        for i in 0..50 {
            d.note(PathBuf::from("log"), Strength::Settled, ms(t, i * 10));
        }
        assert_eq!(d.deadline(), Some(ms(t, 100)));
    }

    #[test]
    fn rescan_is_carried_in_the_batch() {
        let t = Instant::now();
        let mut d = Debouncer::new(Q, Duration::from_secs(1));
        d.note_rescan(t);
        let batch = d.take_due(ms(t, 20)).expect("due");
        assert!(batch.rescan);
    }
}
