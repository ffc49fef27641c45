//! The quiet period: many events, one build, and never a half-written file.
//!
//! A save is a burst of events (vim's backup rename is six of them; every
//! editor sequence measured on this kind of machine finished within ~3.3 ms).
//! A batch opens with the first event that says a file reached a new state,
//! and is released once the sources have been still long enough, or once it
//! has waited the maximum time, so that a file written without pause cannot
//! hold builds back forever.
//!
//! How long is "long enough" follows from a model of each file's save:
//!
//! - A file **open for writing** (written to, or created by opening it, and
//!   not closed since) is half-written by definition: no batch is released
//!   while one is, whatever the quiet period says. inotify does not report
//!   an open for writing as such, but every write is a modify, and the close
//!   of a descriptor that was open for writing is a close-after-write.
//! - A file **gone** (deleted or moved away) may be in the middle of a
//!   rename-style save: vim's backup rename and JetBrains' safe write move
//!   the original away before the new one is in place; `git checkout`
//!   deletes and creates. Until it is back, the full quiet period applies.
//! - A file **complete** (closed after writing, or renamed into place) has
//!   its new bytes. When the batch holds a complete save, nothing is open for
//!   writing or gone, nothing came whose kind is unknown (a poll's
//!   difference, a file found by a walk, a queue overflow), and the batch
//!   does not continue a burst, the batch waits only the short **settle**
//!   instead of the full quiet period.
//!
//! Telling a finished save from a burst in progress. At the close of the
//! first save of a burst nothing tells it from a lone save: only waiting
//! does. So the settle is the longest pause between two saves that still
//! counts as one burst (8 ms by default: a tool that saves file after file,
//! one process each, such as a `sed -i` loop, paused 5.5 ms before its
//! second save on this kind of machine), and it grows as saves keep coming:
//! a batch waits at least twice the longest pause it has seen between two of
//! its events, so a steady stream of saves holds its batch open even when
//! its pauses exceed the settle (up to the full quiet period). A save that
//! comes within the full quiet period of a batch released by the settle
//! means that release was early, a burst is under way: its batch waits the
//! full period. So a burst whose first pause is shorter than the settle
//! builds once, and any other burst whose pauses stay under the full quiet
//! period at most twice (its first saves, then the rest). Shortening the
//! settle towards the 2-3 ms a lone save needs would trade exactly this:
//! a 5 ms burst would build twice.
//!
//! Building ahead. A trivial build takes a few milliseconds, as long as the
//! settle itself, so waiting the settle out before starting it doubles the
//! time from save to new code. A batch that qualifies for the settle is
//! therefore handed on *ahead* ([`Step::Ahead`]) once the sources have been
//! still for the shorter `ahead` time (2 ms by default), for a build to
//! start then; the settle still decides. Any event before the batch is
//! released calls the build off ([`Step::Revoke`]), and the batch then waits
//! as any other (no second build ahead for it); its release confirms the
//! build made ahead, whose result is acted on only then. So a burst still
//! builds once, a half-written file is still never built (a batch with a
//! file open for writing never qualifies), and a lone save's build and trial
//! run while its settle passes. Only with looks that are markers: a poll
//! cannot tell a complete save.
//!
//! A quiet period is confirmed, not assumed: when it has passed, the watch
//! thread is asked for a look ([`Step::Look`]: a sync marker through the
//! inotify queue, which comes back after every event queued before it; in
//! poll mode a scan), and the batch is released only if the look was asked
//! after the period ended and no event came since. With polling, a poll that
//! finds nothing new is the only evidence of quiet there is, so a burst that
//! spans a poll boundary is still one batch.
//!
//! Pure logic over instants passed in, so it is tested without sleeping.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What an event says about a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Data was written (a bare modify): the file is open for writing, and
    /// half-written until it is closed. Never opens a batch by itself.
    Writing,
    /// A regular file was created by opening it: it is open for writing
    /// (empty, or half-written) until it is closed.
    Created,
    /// Closed after writing, or renamed into place: the file is complete.
    Complete,
    /// Its metadata changed (permissions, times): nothing about its bytes.
    Touched,
    /// Found changed without knowing how: a poll's difference, a file found
    /// by walking a new folder, a link created.
    Changed,
    /// Deleted or moved away.
    Gone,
}

impl Kind {
    /// The entry may have changed identity or come or gone (anything but a
    /// bare write): what the tree looks at again.
    pub fn settled(self) -> bool {
        self != Kind::Writing
    }
}

/// What can confirm a quiet period, and what a look costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Looks {
    /// A sync marker through the inotify queue: cheap, asked whenever a
    /// quiet period has passed.
    Markers,
    /// A scan of every watched file: one asked at most once per batch;
    /// after that, the poller's own scans confirm.
    Scans,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub paths: BTreeSet<PathBuf>,
    /// Events were lost: assume every watched file changed.
    pub rescan: bool,
}

impl Batch {
    /// Adds a later batch's changes to this one.
    pub fn absorb(&mut self, later: Batch) {
        self.paths.extend(later.paths);
        self.rescan |= later.rescan;
    }
}

/// Something to say about how a batch was released.
#[derive(Debug, PartialEq, Eq)]
pub enum Note {
    /// Released at the maximum wait while these files were still open for
    /// writing (written to recently and not closed).
    StillWriting(Vec<PathBuf>),
    /// This file was written to this long ago and never closed after; it
    /// is not waited for any more.
    NeverClosed(PathBuf, Duration),
    /// Released at the maximum wait while a look was still out.
    Unconfirmed,
}

/// What the watch thread is to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing until the next event or [`Debouncer::deadline`].
    Wait,
    /// Look whether anything changed that has not been noted yet, and call
    /// [`Debouncer::looked`] with `now` once the look is back.
    Look,
    /// Hand this batch on.
    Release(Batch, Vec<Note>),
    /// Hand this batch on ahead of its settle: a build of it may start now,
    /// to be acted on once the batch is released, unless a
    /// [`Step::Revoke`] comes first.
    Ahead(Batch),
    /// An event came after the batch was handed on ahead: the build started
    /// for it is called off (the batch is released later, as any other).
    Revoke,
}

/// Where the open batch is in building ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AheadState {
    /// Not handed on ahead (yet).
    No,
    /// Handed on ahead, nothing came since.
    Out,
    /// Called off: the batch waits as any other, and is not handed on
    /// ahead again.
    Spent,
}

pub struct Debouncer {
    /// The full quiet period.
    quiet: Duration,
    /// The short settle after a complete save; zero: always the full period.
    settle: Duration,
    /// How long a batch that qualifies for the settle must be still before
    /// it is handed on ahead; zero: never.
    ahead: Duration,
    ahead_state: AheadState,
    /// A [`Step::Revoke`] is to be given at the next step.
    revoke_due: bool,
    max_wait: Duration,
    looks: Looks,
    pending: Batch,
    opened_at: Option<Instant>,
    last_at: Option<Instant>,
    /// Files open for writing, with when they were last written to. Kept
    /// across batches: a file can be opened before one batch and closed in
    /// the next.
    writing: BTreeMap<PathBuf, Instant>,
    /// Files of the open batch that went away and are not back.
    gone: BTreeSet<PathBuf>,
    /// The open batch holds a complete save.
    completed: bool,
    /// The open batch holds a change of unknown kind (or a rescan).
    unsure: bool,
    /// The longest pause between two events of the open batch.
    longest_gap: Duration,
    /// The open batch continues a burst (see the module's notes).
    burst: bool,
    /// The first event of any kind since the last release, or since the
    /// last pause of a full quiet period without a batch open.
    first_since_release: Option<Instant>,
    /// The latest event of any kind.
    last_event: Option<Instant>,
    /// When the last batch was released by the settle, before the full
    /// quiet period.
    early_release: Option<Instant>,
    /// When the look now out was asked for.
    look_out: Option<Instant>,
    /// Looks asked for the open batch.
    looks_asked: u32,
    /// When the latest look that came back was asked: every event before
    /// it has been noted.
    looked_at: Option<Instant>,
}

impl Debouncer {
    pub fn new(quiet: Duration, settle: Duration, max_wait: Duration, looks: Looks) -> Debouncer {
        Debouncer {
            quiet,
            settle: settle.min(quiet),
            ahead: Duration::ZERO,
            ahead_state: AheadState::No,
            revoke_due: false,
            max_wait: max_wait.max(quiet),
            looks,
            pending: Batch::default(),
            opened_at: None,
            last_at: None,
            writing: BTreeMap::new(),
            gone: BTreeSet::new(),
            completed: false,
            unsure: false,
            longest_gap: Duration::ZERO,
            burst: false,
            first_since_release: None,
            last_event: None,
            early_release: None,
            look_out: None,
            looks_asked: 0,
            looked_at: None,
        }
    }

    /// Hands a batch that qualifies for the settle on ahead once it has been
    /// still for `ahead` (shorter than the settle; zero: never).
    pub fn with_ahead(mut self, ahead: Duration) -> Debouncer {
        self.ahead = if ahead < self.settle {
            ahead
        } else {
            Duration::ZERO
        };
        self
    }

    /// The watcher fell back to polling: looks are scans from now on, and
    /// no close will be reported for the files open for writing.
    pub fn now_polling(&mut self) {
        self.looks = Looks::Scans;
        self.writing.clear();
        self.look_out = None;
    }

    pub fn note(&mut self, path: PathBuf, kind: Kind, at: Instant) {
        self.heard(at);
        match kind {
            Kind::Writing => {
                self.writing.insert(path.clone(), at);
                // A write alone never opens a batch: it can come before the
                // bytes are all there, and its close will say when they are.
                if self.opened_at.is_some() {
                    self.pending.paths.insert(path);
                    self.touch(at);
                }
                return;
            }
            Kind::Created => {
                self.gone.remove(&path);
                self.writing.insert(path.clone(), at);
            }
            Kind::Complete => {
                self.gone.remove(&path);
                self.writing.remove(&path);
                self.completed = true;
            }
            Kind::Touched => {}
            Kind::Changed => self.unsure = true,
            Kind::Gone => {
                self.writing.remove(&path);
                self.gone.insert(path.clone());
            }
        }
        self.open(at);
        self.pending.paths.insert(path);
        self.touch(at);
    }

    pub fn note_rescan(&mut self, at: Instant) {
        self.heard(at);
        self.pending.rescan = true;
        self.unsure = true;
        self.open(at);
        self.touch(at);
    }

    /// A look asked at `asked` is back: every event from before it has been
    /// noted.
    pub fn looked(&mut self, asked: Instant) {
        self.looked_at = Some(self.looked_at.map_or(asked, |t| t.max(asked)));
        if self.look_out.is_some_and(|out| out <= asked) {
            self.look_out = None;
        }
    }

    /// Any event: the chain of events that may continue a burst goes on,
    /// unless a full quiet period passed without one (then it starts anew).
    fn heard(&mut self, at: Instant) {
        let paused = self
            .last_event
            .is_some_and(|last| at.saturating_duration_since(last) >= self.quiet);
        if self.opened_at.is_none() && paused {
            self.first_since_release = None;
        }
        self.first_since_release.get_or_insert(at);
        self.last_event = Some(at);
        if self.ahead_state == AheadState::Out {
            self.ahead_state = AheadState::Spent;
            self.revoke_due = true;
        }
    }

    fn open(&mut self, at: Instant) {
        if self.opened_at.is_some() {
            return;
        }
        self.opened_at = Some(at);
        let first = self.first_since_release.unwrap_or(at);
        self.burst = self
            .early_release
            .is_some_and(|released| first < released + self.quiet);
    }

    fn touch(&mut self, at: Instant) {
        if let Some(last) = self.last_at {
            self.longest_gap = self.longest_gap.max(at.saturating_duration_since(last));
        }
        self.last_at = Some(at);
    }

    /// How long the open batch must be still: the settle, grown to twice
    /// the longest pause seen in it, when it holds a complete save and
    /// nothing speaks against it; else the full quiet period.
    fn period(&self) -> Duration {
        if self.short() {
            self.settle.max(self.longest_gap * 2).min(self.quiet)
        } else {
            self.quiet
        }
    }

    /// The open batch qualifies for the settle.
    fn short(&self) -> bool {
        !self.settle.is_zero()
            && self.completed
            && !self.unsure
            && self.gone.is_empty()
            && !self.burst
    }

    /// When the open batch is to be handed on ahead, if it is to be.
    fn ahead_at(&self, now: Instant) -> Option<Instant> {
        let qualifies = !self.ahead.is_zero()
            && self.ahead_state == AheadState::No
            && self.looks == Looks::Markers
            && self.short()
            && self.held_until(now).is_none();
        if !qualifies {
            return None;
        }
        let last = self.last_at.or(self.opened_at)?;
        Some(last + self.ahead)
    }

    /// Until when a file still open for writing holds the batch back: a
    /// writer counts as gone quiet (its close missed, or it keeps the file
    /// open without writing) once it has not written for the maximum wait.
    fn held_until(&self, now: Instant) -> Option<Instant> {
        self.writing
            .values()
            .map(|w| *w + self.max_wait)
            .filter(|stale| *stale > now)
            .max()
    }

    /// When to call [`Debouncer::step`] next if no event comes first.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        if self.revoke_due {
            return Some(now);
        }
        let due = self.release_deadline(now)?;
        Some(match self.ahead_at(now) {
            Some(ahead) => ahead.min(due),
            None => due,
        })
    }

    fn release_deadline(&self, now: Instant) -> Option<Instant> {
        let opened = self.opened_at?;
        let cap = opened + self.max_wait;
        if self.look_out.is_some() || self.waits_for_scans() {
            // The look's answer is an event of its own.
            return Some(cap);
        }
        let last = self.last_at.unwrap_or(opened);
        let due = match self.held_until(now) {
            Some(held) => held.max(last + self.period()),
            None => last + self.period(),
        };
        Some(due.min(cap))
    }

    /// A scan was asked for this batch already: the poller's own scans
    /// confirm the quiet from here.
    fn waits_for_scans(&self) -> bool {
        self.looks == Looks::Scans && self.looks_asked > 0
    }

    pub fn step(&mut self, now: Instant) -> Step {
        if std::mem::take(&mut self.revoke_due) {
            return Step::Revoke;
        }
        let Some(opened) = self.opened_at else {
            return Step::Wait;
        };
        if now >= opened + self.max_wait {
            let unconfirmed = self.look_out.is_some();
            return self.release(now, false, unconfirmed);
        }
        if self.held_until(now).is_some() {
            return Step::Wait;
        }
        let last = self.last_at.unwrap_or(opened);
        let due = last + self.period();
        if now < due {
            if self.ahead_at(now).is_some_and(|at| now >= at) {
                self.ahead_state = AheadState::Out;
                return Step::Ahead(Batch {
                    paths: self.pending.paths.clone(),
                    rescan: self.pending.rescan,
                });
            }
            return Step::Wait;
        }
        if self.looked_at.is_some_and(|at| at >= due && at >= last) {
            let early = self.period() < self.quiet;
            return self.release(now, early, false);
        }
        if self.look_out.is_some() || self.waits_for_scans() {
            return Step::Wait;
        }
        self.look_out = Some(now);
        self.looks_asked += 1;
        Step::Look
    }

    /// `early`: released by the settle; `unconfirmed`: at the maximum wait,
    /// with a look still out.
    fn release(&mut self, now: Instant, early: bool, unconfirmed: bool) -> Step {
        let mut notes = Vec::new();
        let max_wait = self.max_wait;
        let never_closed: Vec<(PathBuf, Instant)> = self
            .writing
            .iter()
            .filter(|(_, w)| **w + max_wait <= now)
            .map(|(p, w)| (p.clone(), *w))
            .collect();
        for (path, written) in never_closed {
            self.writing.remove(&path);
            notes.push(Note::NeverClosed(path, now - written));
        }
        if !self.writing.is_empty() {
            notes.push(Note::StillWriting(self.writing.keys().cloned().collect()));
        }
        if unconfirmed {
            notes.push(Note::Unconfirmed);
        }
        self.opened_at = None;
        self.last_at = None;
        self.gone.clear();
        self.completed = false;
        self.unsure = false;
        self.longest_gap = Duration::ZERO;
        self.burst = false;
        self.first_since_release = None;
        self.early_release = early.then_some(now);
        self.look_out = None;
        self.looks_asked = 0;
        self.ahead_state = AheadState::No;
        Step::Release(std::mem::take(&mut self.pending), notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Duration = Duration::from_millis(20);
    const S: Duration = Duration::from_millis(8);
    const MAX: Duration = Duration::from_secs(1);

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    fn us(base: Instant, n: u64) -> Instant {
        base + Duration::from_micros(n)
    }

    fn adaptive() -> Debouncer {
        Debouncer::new(Q, S, MAX, Looks::Markers)
    }

    fn fixed() -> Debouncer {
        Debouncer::new(Q, Duration::ZERO, MAX, Looks::Markers)
    }

    fn p(name: &str) -> PathBuf {
        PathBuf::from(name)
    }

    /// An in-place save of `name` starting at `at`: truncate, write, close.
    fn save(d: &mut Debouncer, name: &str, at: Instant) {
        d.note(p(name), Kind::Writing, at);
        d.note(p(name), Kind::Writing, at + Duration::from_micros(50));
        d.note(p(name), Kind::Complete, at + Duration::from_micros(100));
    }

    /// Runs the watch thread's side from `from` to `until` in steps of
    /// 100 µs: looks come back at once (as a marker does within a
    /// fraction of a millisecond). The releases, and when.
    fn run(d: &mut Debouncer, from: Instant, until: Instant) -> Vec<(Instant, Batch)> {
        let mut out = Vec::new();
        let mut now = from;
        while now <= until {
            loop {
                match d.step(now) {
                    Step::Wait => break,
                    Step::Look => d.looked(now),
                    Step::Release(batch, _) => out.push((now, batch)),
                    // Only with `with_ahead`: see `trace`.
                    Step::Ahead(_) | Step::Revoke => {}
                }
            }
            now += Duration::from_micros(100);
        }
        out
    }

    /// `saves` in-place saves `gap_ms` apart from `t`, the watch thread
    /// running between them and for 200 ms after.
    fn burst(d: &mut Debouncer, t: Instant, saves: u64, gap_ms: u64) -> Vec<(Instant, Batch)> {
        let mut released = Vec::new();
        burst_with(d, t, saves, gap_ms, |d, from, until| {
            released.extend(run(d, from, until))
        });
        released
    }

    /// As `burst`, the watch thread's side run by `run`.
    fn burst_with(
        d: &mut Debouncer,
        t: Instant,
        saves: u64,
        gap_ms: u64,
        mut run: impl FnMut(&mut Debouncer, Instant, Instant),
    ) {
        let mut from = t;
        for i in 0..saves {
            let at = ms(t, i * gap_ms);
            run(d, from, at);
            save(d, "logic.c", at);
            from = at;
        }
        run(d, from, from + Duration::from_millis(200));
    }

    #[test]
    fn a_complete_save_is_released_after_the_settle_once_a_look_confirms_it() {
        let t = Instant::now();
        let mut d = adaptive();
        save(&mut d, "logic.c", t);
        let closed = us(t, 100);
        assert_eq!(d.deadline(closed), Some(closed + S));
        assert_eq!(d.step(closed + S - Duration::from_micros(1)), Step::Wait);
        assert_eq!(d.step(closed + S), Step::Look);
        // The look is out: nothing to do until it is back.
        assert_eq!(d.step(closed + S), Step::Wait);
        d.looked(closed + S);
        match d.step(closed + S) {
            Step::Release(batch, notes) => {
                assert_eq!(batch.paths.len(), 1);
                assert!(notes.is_empty());
            }
            other => panic!("expected a release, got {other:?}"),
        }
        assert!(d.deadline(closed + S).is_none());
    }

    #[test]
    fn an_event_before_the_look_came_back_keeps_the_batch_open() {
        let t = Instant::now();
        let mut d = adaptive();
        save(&mut d, "logic.c", t);
        let asked = us(t, 100) + S;
        assert_eq!(d.step(asked), Step::Look);
        // The next save's first write was already on its way.
        d.note(
            p("logic.c"),
            Kind::Writing,
            asked + Duration::from_micros(10),
        );
        d.looked(asked);
        assert_eq!(d.step(asked + Duration::from_micros(20)), Step::Wait);
    }

    #[test]
    fn without_the_settle_the_full_quiet_period_applies() {
        let t = Instant::now();
        let mut d = fixed();
        save(&mut d, "logic.c", t);
        let released = run(&mut d, t, ms(t, 100));
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].0, us(t, 100) + Q);
    }

    #[test]
    fn a_back_to_back_burst_becomes_one_batch_after_the_settle() {
        let t = Instant::now();
        let mut d = adaptive();
        for i in 0..20 {
            save(&mut d, "logic.c", us(t, i * 200));
        }
        let released = run(&mut d, t, ms(t, 100));
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].1.paths.len(), 1);
        // The settle after the last close (the longest pause, 100 µs, is far
        // below it).
        assert_eq!(released[0].0, us(t, 19 * 200 + 100) + S);
    }

    #[test]
    fn saves_5_ms_apart_are_one_batch_the_settle_growing_with_the_pauses() {
        let t = Instant::now();
        let mut d = adaptive();
        let released = burst(&mut d, t, 20, 5);
        assert_eq!(released.len(), 1, "{released:?}");
        // Twice the longest pause (close to the next write: 4.9 ms).
        let last_close = us(t, 95_100);
        assert_eq!(released[0].0, last_close + Duration::from_micros(9_800));
    }

    #[test]
    fn a_burst_slower_than_the_settle_builds_its_first_save_then_the_rest_once() {
        let t = Instant::now();
        let mut d = adaptive();
        let released = burst(&mut d, t, 10, 12);
        assert_eq!(released.len(), 2, "{released:?}");
        // The first by the settle; the rest continue a burst: the full period.
        assert_eq!(released[0].0, us(t, 100) + S);
        assert_eq!(released[1].0, us(t, 108_100) + Q);
    }

    #[test]
    fn a_stray_write_after_an_early_release_makes_no_burst_of_a_later_save() {
        let t = Instant::now();
        let mut d = adaptive();
        save(&mut d, "logic.c", t);
        assert_eq!(run(&mut d, t, ms(t, 10)).len(), 1);
        // Within the full period of that release: a write, never closed
        // (the file is not waited for once it has gone quiet).
        d.note(p("x.c"), Kind::Writing, ms(t, 15));
        save(&mut d, "logic.c", ms(t, 3000));
        let released = run(&mut d, ms(t, 3000), ms(t, 3100));
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].0, us(t, 3_000_100) + S, "the settle, no burst");
    }

    #[test]
    fn a_file_open_for_writing_holds_the_batch_until_it_is_closed() {
        let t = Instant::now();
        let mut d = adaptive();
        // a.c is saved while b.c is being written in pieces.
        d.note(p("b.c"), Kind::Writing, t);
        save(&mut d, "a.c", ms(t, 1));
        assert!(run(&mut d, ms(t, 1), ms(t, 300)).is_empty());
        d.note(p("b.c"), Kind::Writing, ms(t, 300));
        d.note(p("b.c"), Kind::Complete, ms(t, 301));
        let released = run(&mut d, ms(t, 301), ms(t, 400));
        assert_eq!(released.len(), 1);
        // The writer paused long: the full period, to be safe.
        assert_eq!(released[0].0, ms(t, 301) + Q);
        assert_eq!(released[0].1.paths.len(), 2);
    }

    #[test]
    fn a_file_created_and_written_slowly_is_held_until_its_close() {
        let t = Instant::now();
        let mut d = adaptive();
        d.note(p("logic.c"), Kind::Created, t);
        d.note(p("logic.c"), Kind::Writing, us(t, 10));
        assert!(run(&mut d, t, ms(t, 500)).is_empty());
        d.note(p("logic.c"), Kind::Writing, ms(t, 500));
        d.note(p("logic.c"), Kind::Complete, ms(t, 500));
        assert_eq!(run(&mut d, ms(t, 500), ms(t, 600)).len(), 1);
    }

    #[test]
    fn a_writer_that_never_closes_is_waited_for_until_the_maximum_wait() {
        let t = Instant::now();
        let mut d = adaptive();
        // A log written every 10 ms by a process that keeps it open.
        save(&mut d, "logic.c", t);
        let mut now = t;
        let release = loop {
            now += Duration::from_millis(10);
            d.note(p("app.log"), Kind::Writing, now);
            if let Step::Release(batch, notes) = d.step(now) {
                break (now, batch, notes);
            }
        };
        // The batch opened at the close (100 µs), a write of the log every
        // 10 ms: the first step past the maximum wait.
        assert_eq!(release.0, ms(t, 1010));
        assert_eq!(release.2, vec![Note::StillWriting(vec![p("app.log")])]);
    }

    #[test]
    fn a_write_never_closed_is_not_waited_for_once_it_went_quiet() {
        let t = Instant::now();
        let mut d = adaptive();
        // truncate(2) by name: a modify without a close.
        d.note(p("x.c"), Kind::Writing, t);
        save(&mut d, "logic.c", ms(t, 2000));
        let mut steps = Vec::new();
        let mut now = ms(t, 2000);
        while steps.is_empty() && now < ms(t, 2100) {
            match d.step(now) {
                Step::Look => d.looked(now),
                Step::Release(_, notes) => steps.push(notes),
                Step::Wait => now += Duration::from_micros(100),
                Step::Ahead(_) | Step::Revoke => unreachable!("not building ahead"),
            }
        }
        assert_eq!(
            steps,
            vec![vec![Note::NeverClosed(p("x.c"), now - t)]],
            "released by the settle, with a word about x.c"
        );
    }

    #[test]
    fn vims_backup_rename_waits_for_the_new_file_and_then_settles() {
        let t = Instant::now();
        let mut d = adaptive();
        // logic.c -> logic.c~ (the backup is no source), then a new logic.c.
        d.note(p("logic.c"), Kind::Gone, t);
        assert_eq!(d.deadline(t), Some(t + Q), "gone: the full period");
        d.note(p("logic.c"), Kind::Created, us(t, 200));
        d.note(p("logic.c"), Kind::Writing, us(t, 250));
        d.note(p("logic.c"), Kind::Complete, us(t, 1500));
        d.note(p("logic.c"), Kind::Touched, us(t, 1500));
        let released = run(&mut d, t, ms(t, 100));
        assert_eq!(released.len(), 1);
        // The settle after the last event: twice the longest pause (the
        // fsync between the write and the close, 1.25 ms) is below it.
        assert_eq!(released[0].0, us(t, 1500) + S);
    }

    #[test]
    fn a_file_deleted_and_not_back_waits_the_full_period() {
        let t = Instant::now();
        let mut d = adaptive();
        save(&mut d, "a.c", t);
        d.note(p("b.h"), Kind::Gone, us(t, 200));
        let released = run(&mut d, t, ms(t, 100));
        assert_eq!(released[0].0, us(t, 200) + Q);
    }

    #[test]
    fn unknown_changes_wait_the_full_period() {
        let t = Instant::now();
        let mut d = Debouncer::new(Q, S, MAX, Looks::Scans);
        d.note(p("logic.c"), Kind::Changed, t);
        // A scan is asked once the period is over...
        assert_eq!(d.step(ms(t, 19)), Step::Wait);
        assert_eq!(d.step(ms(t, 20)), Step::Look);
        // ...which finds the burst still going; the next periodic one
        // confirms, and no second scan is asked for.
        d.note(p("logic.c"), Kind::Changed, ms(t, 21));
        d.looked(ms(t, 20));
        assert_eq!(d.step(ms(t, 45)), Step::Wait);
        assert_eq!(d.deadline(ms(t, 45)), Some(t + MAX));
        d.looked(ms(t, 120));
        assert!(matches!(d.step(ms(t, 121)), Step::Release(..)));
    }

    #[test]
    fn a_periodic_scan_that_started_after_the_period_confirms_it() {
        let t = Instant::now();
        let mut d = Debouncer::new(Q, S, MAX, Looks::Scans);
        d.note(p("logic.c"), Kind::Changed, t);
        assert_eq!(d.step(ms(t, 21)), Step::Look);
        // The poller's own scan, started after the period but before the
        // look was asked, comes back first: it confirms, nothing to say.
        d.looked(us(t, 20_500));
        assert_eq!(
            d.step(ms(t, 22)),
            Step::Release(
                Batch {
                    paths: [p("logic.c")].into(),
                    rescan: false
                },
                Vec::new()
            )
        );
        assert!(d.deadline(ms(t, 22)).is_none());
    }

    #[test]
    fn a_scan_that_found_the_change_itself_confirms_nothing() {
        let t = Instant::now();
        let mut d = Debouncer::new(Q, S, MAX, Looks::Scans);
        // A scan started at t found the change (noted after t).
        d.note(p("logic.c"), Kind::Changed, ms(t, 1));
        d.looked(t);
        assert_eq!(d.step(ms(t, 30)), Step::Look);
    }

    #[test]
    fn a_stream_without_pause_is_released_at_the_maximum_wait() {
        let t = Instant::now();
        let mut d = Debouncer::new(Q, S, Duration::from_millis(100), Looks::Markers);
        for i in 0..50 {
            d.note(p("log"), Kind::Complete, ms(t, i * 10));
        }
        assert_eq!(d.deadline(ms(t, 90)), Some(ms(t, 100)));
        assert!(matches!(d.step(ms(t, 100)), Step::Release(..)));
    }

    #[test]
    fn a_look_that_never_comes_back_is_said_at_the_maximum_wait() {
        let t = Instant::now();
        let mut d = adaptive();
        save(&mut d, "logic.c", t);
        assert_eq!(d.step(ms(t, 10)), Step::Look);
        let cap = us(t, 100) + MAX;
        assert_eq!(d.deadline(ms(t, 10)), Some(cap));
        assert_eq!(
            d.step(cap),
            Step::Release(
                Batch {
                    paths: [p("logic.c")].into(),
                    rescan: false
                },
                vec![Note::Unconfirmed]
            )
        );
    }

    #[test]
    fn rescan_is_carried_in_the_batch_after_the_full_period() {
        let t = Instant::now();
        let mut d = adaptive();
        d.note_rescan(t);
        let released = run(&mut d, t, ms(t, 100));
        assert_eq!(released[0].0, ms(t, 20));
        assert!(released[0].1.rescan);
    }

    /// What a debouncer that builds ahead hands on, and when.
    #[derive(Debug, PartialEq, Eq)]
    enum Out {
        Ahead(Instant),
        Revoke(Instant),
        Release(Instant),
    }

    /// As `run`, with the steps that build ahead recorded too.
    fn trace(d: &mut Debouncer, from: Instant, until: Instant, out: &mut Vec<Out>) {
        let mut now = from;
        while now <= until {
            loop {
                match d.step(now) {
                    Step::Wait => break,
                    Step::Look => d.looked(now),
                    Step::Release(..) => out.push(Out::Release(now)),
                    Step::Ahead(batch) => {
                        assert!(batch.paths.contains(&p("logic.c")), "{batch:?}");
                        out.push(Out::Ahead(now));
                    }
                    Step::Revoke => out.push(Out::Revoke(now)),
                }
            }
            now += Duration::from_micros(100);
        }
    }

    const A: Duration = Duration::from_millis(2);

    fn ahead() -> Debouncer {
        adaptive().with_ahead(A)
    }

    #[test]
    fn a_lone_save_is_handed_on_ahead_and_released_at_its_settle() {
        let t = Instant::now();
        let mut d = ahead();
        save(&mut d, "logic.c", t);
        let closed = us(t, 100);
        assert_eq!(d.deadline(closed), Some(closed + A));
        let mut out = Vec::new();
        trace(&mut d, closed, ms(t, 100), &mut out);
        assert_eq!(out, [Out::Ahead(closed + A), Out::Release(closed + S)]);
    }

    #[test]
    fn a_save_after_the_batch_went_ahead_calls_it_off_and_the_burst_builds_once() {
        let t = Instant::now();
        let mut d = ahead();
        let mut out = Vec::new();
        burst_with(&mut d, t, 20, 5, |d, from, until| {
            trace(d, from, until, &mut out)
        });
        // Ahead after the first save, called off by the second's first
        // event; nothing ahead again, one release after the last save.
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0], Out::Ahead(us(t, 100) + A));
        assert_eq!(out[1], Out::Revoke(ms(t, 5)));
        assert!(
            matches!(out[2], Out::Release(at) if at > ms(t, 95)),
            "{out:?}"
        );
    }

    #[test]
    fn a_file_open_for_writing_is_never_handed_on_ahead() {
        let t = Instant::now();
        let mut d = ahead();
        save(&mut d, "logic.c", t);
        // Another file written and not closed: the batch waits for it.
        d.note(p("other.c"), Kind::Writing, us(t, 150));
        let mut out = Vec::new();
        trace(&mut d, us(t, 150), ms(t, 30), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_batch_that_waits_the_full_period_is_never_handed_on_ahead() {
        let t = Instant::now();
        let mut d = ahead();
        d.note(p("logic.c"), Kind::Changed, t);
        let mut out = Vec::new();
        trace(&mut d, t, ms(t, 100), &mut out);
        assert_eq!(out, [Out::Release(t + Q)]);
        let mut polled = Debouncer::new(Q, S, MAX, Looks::Scans).with_ahead(A);
        save(&mut polled, "logic.c", t);
        let mut out = Vec::new();
        trace(&mut polled, t, ms(t, 100), &mut out);
        assert!(out.iter().all(|o| matches!(o, Out::Release(_))), "{out:?}");
    }

    #[test]
    fn an_ahead_time_not_shorter_than_the_settle_is_off() {
        let t = Instant::now();
        let mut d = adaptive().with_ahead(S);
        save(&mut d, "logic.c", t);
        let mut out = Vec::new();
        trace(&mut d, t, ms(t, 100), &mut out);
        assert_eq!(out, [Out::Release(us(t, 100) + S)]);
    }
}
