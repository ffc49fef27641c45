//! The recent past of the state, for `rewind`, `replay` and `loop`.
//!
//! Every snapshot take ([`super::snapshot`]) already finds the pages that
//! changed since the last one; with a history, the bytes those pages held
//! before are kept too, as one [`Entry`] per take. Applied newest first,
//! the entries walk the state back tick by tick: an entry turns the state
//! at the next take into the state at its own tick. An entry also keeps the
//! input the host passed the tick that ran after it, the one thing besides
//! the state that can make a tick differ for the plugin: the seed and the
//! tick index (the host context) follow from the run and the tick number,
//! and `dt` is fixed.
//!
//! The history is bounded by ticks and by bytes, whichever comes first;
//! the oldest entries go. The pages are shared (`Arc`), so a reader copies
//! pointers, not bytes, under the snapshot's lock.

use std::collections::VecDeque;
use std::sync::Arc;

/// The bytes one page held at an entry's tick (the last page of a state
/// may be shorter than a page).
pub type Page = Arc<[u8]>;

/// What changed between the take at `tick` and the next one: each page
/// that changed, as it was at `tick`.
#[derive(Clone)]
pub struct Entry {
    pub tick: u64,
    pub pages: Vec<(usize, Page)>,
    /// The input the host passed the tick that ran from this entry's
    /// state, if it passed any (shared with the ticks that got the same).
    pub input: Option<Page>,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.pages.iter().map(|(_, p)| p.len() + 16).sum::<usize>()
            + self.input.as_ref().map_or(0, |i| i.len())
            + 64
    }
}

/// How much history to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    pub ticks: usize,
    pub bytes: usize,
}

pub struct History {
    bound: Bound,
    /// Oldest first.
    entries: VecDeque<Entry>,
    bytes: usize,
    /// The ticks the last rewinds went back over, while the state stays
    /// where they put it.
    undone: Option<Undone>,
    /// Whether the bytes bound has cut the history short of its ticks
    /// (said once, by the tick loop).
    cut_by_bytes: bool,
}

impl History {
    pub fn new(bound: Bound) -> History {
        History {
            bound,
            entries: VecDeque::new(),
            bytes: 0,
            undone: None,
            cut_by_bytes: false,
        }
    }

    pub fn bound(&self) -> Bound {
        self.bound
    }

    /// Keeps `entry`, dropping the oldest entries beyond the bound. An
    /// entry that leaves the tick a rewind went to, or that changed a page
    /// there, starts another past: the ticks the rewind went back over are
    /// no longer what would come next, and go (handed back, to be said).
    pub fn push(&mut self, entry: Entry) -> Option<Undone> {
        let diverged = self
            .undone
            .as_ref()
            .is_some_and(|u| entry.tick != u.at || !entry.pages.is_empty());
        let dropped = if diverged { self.undone.take() } else { None };
        self.bytes += entry.bytes();
        self.entries.push_back(entry);
        while self.entries.len() > self.bound.ticks
            || (self.bytes > self.bound.bytes && self.entries.len() > 1)
        {
            if self.entries.len() <= self.bound.ticks {
                self.cut_by_bytes = true;
            }
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.bytes();
            }
        }
        dropped
    }

    /// Takes the newest entry back out (a rewind applies it).
    pub fn pop(&mut self) -> Option<Entry> {
        let entry = self.entries.pop_back()?;
        self.bytes -= entry.bytes();
        Some(entry)
    }

    /// The earliest tick the state can be put back to, if any.
    pub fn oldest_tick(&self) -> Option<u64> {
        self.entries.front().map(|e| e.tick)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the bytes bound, not the ticks, limits what is kept.
    pub fn cut_by_bytes(&self) -> bool {
        self.cut_by_bytes
    }

    /// The entries from the state right before tick `tick` ran on, oldest
    /// first (shared, not copied): from the last entry of that tick (a
    /// boundary can have several: `init`, a hook or an edit before the
    /// tick itself).
    pub fn since(&self, tick: u64) -> Vec<Entry> {
        let start = self
            .entries
            .iter()
            .rposition(|e| e.tick == tick)
            .or_else(|| self.entries.iter().position(|e| e.tick > tick))
            .unwrap_or(self.entries.len());
        self.entries.range(start..).cloned().collect()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.undone = None;
    }

    pub fn forget_undone(&mut self) {
        self.undone = None;
    }

    /// What the last rewinds went back over, while nothing has changed
    /// the state since.
    pub fn undone(&self) -> Option<&Undone> {
        self.undone.as_ref()
    }

    /// Keeps what a rewind went back over: `popped`, the entries it took
    /// back out, newest first, with each page they name as it was before
    /// the rewind (`before`); the rewind went from tick `from` to `to`. A
    /// rewind further back adds to what an earlier one kept: a page only
    /// this one touches was, before it, as the first rewind found it.
    pub fn undo(&mut self, popped: Vec<Entry>, before: impl Fn(usize) -> Page, from: u64, to: u64) {
        let mut undone = self.undone.take().unwrap_or(Undone {
            entries: VecDeque::new(),
            latest: std::collections::HashMap::new(),
            tick: from,
            at: from,
        });
        for entry in popped {
            for (p, _) in &entry.pages {
                undone.latest.entry(*p).or_insert_with(|| before(*p));
            }
            undone.entries.push_front(entry);
        }
        undone.at = to;
        self.undone = Some(undone);
    }

    /// Takes back out what a rewind went back over up to the newest entry
    /// at tick `target` (or `target` is the tick the first rewind came
    /// from): into the history again, oldest first, and the pages to write
    /// to bring the state there, each as it is at `target`. `None`, with
    /// nothing changed, when `target` is not among what is kept.
    pub fn redo(&mut self, target: u64) -> Option<Vec<(usize, Page)>> {
        let undone = self.undone.as_mut()?;
        if target <= undone.at || target > undone.tick {
            return None;
        }
        // The entries from the newest at `target` on stay undone.
        let keep_from = if target == undone.tick {
            undone.entries.len()
        } else {
            undone.entries.iter().rposition(|e| e.tick == target)?
        };
        let redone: Vec<Entry> = undone.entries.drain(..keep_from).collect();
        // A page is at `target` as the first entry still undone that
        // names it kept it, or as it was before the first rewind.
        let mut pages: std::collections::HashMap<usize, Page> = std::collections::HashMap::new();
        for entry in &redone {
            for (p, _) in &entry.pages {
                pages.entry(*p).or_insert_with(|| {
                    undone
                        .entries
                        .iter()
                        .find_map(|e| e.pages.iter().find(|(q, _)| q == p))
                        .map(|(_, bytes)| bytes.clone())
                        .or_else(|| undone.latest.get(p).cloned())
                        .unwrap_or_else(|| Arc::from(&[][..]))
                });
            }
        }
        undone.at = target;
        if undone.entries.is_empty() {
            self.undone = None;
        }
        for entry in redone {
            self.bytes += entry.bytes();
            self.entries.push_back(entry);
        }
        let mut pages: Vec<(usize, Page)> = pages.into_iter().collect();
        pages.sort_unstable_by_key(|(p, _)| *p);
        Some(pages)
    }
}

/// The ticks a rewind went back over: kept for `replay`, `loop` and
/// `record` (and a rewind forward again) while the state stays at the tick
/// the rewind went to. Its entries lead back, like the history's, from the
/// state at `tick` (the pages they name as `latest` holds them) to the
/// state at `at`.
#[derive(Clone)]
pub struct Undone {
    /// Oldest first.
    pub entries: VecDeque<Entry>,
    /// Each page the entries name, as it was at `tick`.
    pub latest: std::collections::HashMap<usize, Page>,
    /// The tick the state was at before the first rewind.
    pub tick: u64,
    /// The tick the state is at now.
    pub at: u64,
}

impl Undone {
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(Entry::bytes).sum::<usize>()
            + self.latest.values().map(|p| p.len() + 16).sum::<usize>()
    }
}

/// The states of a recorded window, rebuilt from the state at its end and
/// the entries back to its start: the state at the start, and for each
/// entry, oldest first, the pages it changed as they were after it.
pub struct Window {
    pub start_tick: u64,
    pub start: Vec<u8>,
    pub steps: Vec<Step>,
}

/// One step from a take to the next.
pub struct Step {
    /// The tick counter at the take the step starts from.
    pub tick: u64,
    /// Whether a tick ran in the step (the next take's tick is higher), or
    /// only something between two ticks: `init`, a hook, an edit.
    pub ticked: bool,
    /// The pages the step changed, as the next take found them.
    pub after: Vec<(usize, Page)>,
    /// The input the step's tick was passed, if any.
    pub input: Option<Page>,
}

/// Rebuilds the window from `now` (the state at the newest take, at tick
/// `now_tick`) and `entries` (every entry from the window's start on,
/// oldest first).
pub fn window(now: &[u8], now_tick: u64, entries: &[Entry], page: usize) -> Window {
    // Newest first: each page's content after an entry is the content the
    // next newer entry recorded for it, or `now`'s.
    let mut newer: std::collections::HashMap<usize, Page> = std::collections::HashMap::new();
    let mut steps = Vec::with_capacity(entries.len());
    for entry in entries.iter().rev() {
        let after: Vec<(usize, Page)> = entry
            .pages
            .iter()
            .map(|(p, _)| {
                let content = newer.get(p).cloned().unwrap_or_else(|| {
                    let from = p * page;
                    let to = (from + page).min(now.len());
                    crate::state::pages::shared_copy(&now[from..to])
                });
                (*p, content)
            })
            .collect();
        for (p, old) in &entry.pages {
            newer.insert(*p, old.clone());
        }
        steps.push(Step {
            tick: entry.tick,
            ticked: false,
            after,
            input: entry.input.clone(),
        });
    }
    steps.reverse();
    let mut next_ticks: Vec<u64> = steps.iter().skip(1).map(|s| s.tick).collect();
    next_ticks.push(now_tick);
    for (step, next) in steps.iter_mut().zip(next_ticks) {
        step.ticked = next > step.tick;
    }
    let mut start = now.to_vec();
    for (p, old) in &newer {
        let from = p * page;
        start[from..from + old.len()].copy_from_slice(old);
    }
    Window {
        start_tick: entries.first().map_or(0, |e| e.tick),
        start,
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(b: u8) -> Page {
        Arc::from(vec![b; 4].as_slice())
    }

    #[test]
    fn the_bound_drops_the_oldest_and_says_when_bytes_cut_it() {
        let mut h = History::new(Bound {
            ticks: 3,
            bytes: 1 << 20,
        });
        for t in 0..5 {
            h.push(Entry {
                tick: t,
                pages: vec![(0, page(t as u8))],
                input: None,
            });
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.oldest_tick(), Some(2));
        assert!(!h.cut_by_bytes());
        let mut small = History::new(Bound {
            ticks: 100,
            bytes: 200,
        });
        for t in 0..10 {
            small.push(Entry {
                tick: t,
                pages: vec![(0, page(1)), (1, page(2))],
                input: None,
            });
        }
        assert!(small.len() < 10);
        assert!(small.bytes() <= 200);
        assert!(small.cut_by_bytes());
    }

    #[test]
    fn since_starts_at_the_last_take_of_a_tick() {
        let mut h = History::new(Bound {
            ticks: 10,
            bytes: 1 << 20,
        });
        for (t, b) in [(0, 1), (0, 2), (1, 3), (2, 4)] {
            h.push(Entry {
                tick: t,
                pages: vec![(0, page(b))],
                input: None,
            });
        }
        let from0 = h.since(0);
        assert_eq!(from0.len(), 3);
        assert_eq!(from0[0].pages[0].1[0], 2);
        assert_eq!(h.since(2).len(), 1);
        assert!(h.since(3).is_empty());
    }

    #[test]
    fn a_window_rebuilds_every_state_between_its_ends() {
        // Three ticks over a state of three 4-byte pages.
        let states: Vec<Vec<u8>> = vec![
            [[0; 4], [0; 4], [0; 4]].concat(),
            [[1; 4], [0; 4], [0; 4]].concat(),
            [[1; 4], [2; 4], [0; 4]].concat(),
            [[3; 4], [2; 4], [0; 4]].concat(),
        ];
        let entry = |t: usize, p: usize| Entry {
            tick: t as u64,
            pages: vec![(p, Arc::from(&states[t][p * 4..p * 4 + 4]))],
            input: (t == 1).then(|| page(7)),
        };
        let entries = vec![entry(0, 0), entry(1, 1), entry(2, 0)];
        let w = window(&states[3], 3, &entries, 4);
        assert_eq!(w.start_tick, 0);
        assert_eq!(w.start, states[0]);
        let mut s = w.start.clone();
        for (i, step) in w.steps.iter().enumerate() {
            assert_eq!(step.tick, i as u64);
            assert!(step.ticked);
            assert_eq!(step.input.is_some(), i == 1, "only tick 1 had input");
            for (p, content) in &step.after {
                s[p * 4..p * 4 + content.len()].copy_from_slice(content);
            }
            assert_eq!(s, states[i + 1], "after tick {i}");
        }
    }
}
