//! Putting the state back to an earlier tick from the history
//! (`rewind N`, `rewind-to TICK`, while paused), and `loop FROM TO`: when
//! the loop reaches `TO` it rewinds to `FROM` and ticks the window again,
//! with whatever version runs by then (a build that lands mid-loop takes
//! the next pass) and the input the history recorded for each tick, the
//! way looped live editing works.

use crate::event::{Event, LoopPass};
use crate::plugin::Plugin;

use super::{DoorError, TickLoop};

/// Where a rewind goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewindTo {
    /// This many ticks back.
    Back(u64),
    /// This tick.
    Tick(u64),
}

/// What a rewind did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewound {
    pub from: u64,
    pub to: u64,
}

pub type RewindReply = super::door::Asked<Rewound>;

/// A loop in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Looping {
    pub from: u64,
    pub to: u64,
    pub pass: u64,
}

/// What `loop` did: the window set (or `None`, turned off) and the tick
/// the loop starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopSet {
    pub window: Option<(u64, u64)>,
    pub tick: u64,
}

pub type LoopReply = super::door::Asked<LoopSet>;

/// Who rewinds: a `rewind` asked for keeps what it goes back over (for
/// `replay`, `record` and a rewind forward); a loop's next pass does not.
#[derive(Clone, Copy)]
enum Pass {
    Asked,
    Loop,
}

impl TickLoop {
    pub(super) fn rewind(&mut self, to: RewindTo, reply: RewindReply) {
        if let Some(reply) = reply.claim() {
            reply.send(self.rewind_on_request(to));
        }
    }

    fn rewind_on_request(&mut self, to: RewindTo) -> Result<Rewound, DoorError> {
        if !self.user_paused || self.steps_left > 0 {
            return Err(DoorError::NotPaused(format!(
                "expected a paused server for rewind (hotreload ctl pause first), found it {}",
                if self.steps_left > 0 {
                    "stepping"
                } else {
                    "ticking"
                }
            )));
        }
        let target = match to {
            RewindTo::Tick(tick) => tick,
            RewindTo::Back(n) => self.ticks.checked_sub(n).ok_or_else(|| {
                DoorError::Refused(format!(
                    "expected at most {} ticks to rewind, the ticks run so far, found {n}",
                    self.ticks
                ))
            })?,
        };
        let from = self.ticks;
        let to = self
            .rewind_state(target, Pass::Asked)
            .map_err(DoorError::Refused)?;
        (self.events)(Event::Rewound {
            from,
            to,
            version: self.current.as_ref().map(Plugin::version),
            looping: None,
        });
        Ok(Rewound { from, to })
    }

    /// Puts the state and the tick counter back to `target` (or forward,
    /// within what an asked-for rewind went back over).
    fn rewind_state(&mut self, target: u64, pass: Pass) -> Result<u64, String> {
        let Some(state) = &mut self.state else {
            return Err("expected a state to rewind, found none yet".into());
        };
        let reached = match pass {
            Pass::Asked => self.snapshot.rewind_to(state, self.ticks, target)?,
            Pass::Loop => self.snapshot.rewind_for_loop(state, self.ticks, target)?,
        };
        self.ticks = reached;
        self.board.set_tick(reached);
        // The values `undo` would put back belong to the future now.
        self.undo.clear();
        Ok(reached)
    }

    pub(super) fn set_loop(&mut self, window: Option<(u64, u64)>, reply: LoopReply) {
        if let Some(reply) = reply.claim() {
            reply.send(self.set_loop_now(window));
        }
    }

    fn set_loop_now(&mut self, window: Option<(u64, u64)>) -> Result<LoopSet, DoorError> {
        let version = self.current.as_ref().map(Plugin::version);
        let Some((from, to)) = window else {
            self.input.play_back(None);
            let was = self.looping.take();
            if was.is_some() {
                (self.events)(Event::LoopSet {
                    window: None,
                    version,
                });
            }
            return Ok(LoopSet {
                window: None,
                tick: self.ticks,
            });
        };
        if from >= to {
            return Err(DoorError::Refused(format!(
                "expected a window FROM < TO, found {from}..{to}"
            )));
        }
        let span = self.snapshot.history_span().ok_or_else(|| {
            DoorError::Refused(
                "expected a history to loop over, found none (--history-ticks 0)".into(),
            )
        })?;
        let window_ticks = usize::try_from(to - from).unwrap_or(usize::MAX);
        if window_ticks > span.bound.ticks {
            return Err(DoorError::Refused(format!(
                "expected a window of at most {} ticks (--history-ticks), found {window_ticks}",
                span.bound.ticks
            )));
        }
        let oldest = span.oldest.unwrap_or(self.ticks);
        if from < oldest || from > self.ticks {
            return Err(DoorError::Refused(format!(
                "expected FROM within the recorded ticks {oldest}..{}, found {from}",
                self.ticks
            )));
        }
        // What the recorded ticks of the window were passed (some may be
        // ticks a rewind went back over), read before a rewind drops them
        // from the history.
        let newest = span.newest.unwrap_or(self.ticks).max(self.ticks);
        let recorded = self.recorded_inputs(from, to.min(newest));
        if self.ticks != from && self.ticks >= to {
            // Past the window's end: the first pass starts now.
            self.rewind_state(from, Pass::Loop)
                .map_err(DoorError::Refused)?;
        }
        self.input.play_back(Some((from, recorded)));
        self.looping = Some(Looping { from, to, pass: 1 });
        (self.events)(Event::LoopSet {
            window: Some((from, to)),
            version,
        });
        Ok(LoopSet {
            window: Some((from, to)),
            tick: self.ticks,
        })
    }

    /// The input the history recorded for the ticks `from..to`: what a
    /// loop's next pass plays back. A history too busy to read now gives
    /// none, said: the pass then runs on the live input.
    fn recorded_inputs(&self, from: u64, to: u64) -> Vec<Option<crate::state::history::Page>> {
        self.snapshot
            .inputs(from, to, std::time::Duration::from_millis(100))
            .unwrap_or_else(|| {
                (self.events)(Event::ServerNotice(format!(
                    "loop {from}..{to}: the recorded input could not be read (the snapshot is \
                     busy); this pass runs on the live input"
                )));
                Vec::new()
            })
    }

    /// After a tick: at the loop's end, back to its start.
    pub(super) fn loop_if_due(&mut self) {
        let Some(mut looping) = self.looping else {
            return;
        };
        if self.ticks < looping.to {
            return;
        }
        let from = self.ticks;
        let recorded = self.recorded_inputs(looping.from, looping.to);
        match self.rewind_state(looping.from, Pass::Loop) {
            Ok(to) => {
                self.input.play_back(Some((looping.from, recorded)));
                looping.pass += 1;
                self.looping = Some(looping);
                (self.events)(Event::Rewound {
                    from,
                    to,
                    version: self.current.as_ref().map(Plugin::version),
                    looping: Some(LoopPass {
                        from: looping.from,
                        to: looping.to,
                        pass: looping.pass,
                    }),
                });
            }
            Err(why) => {
                self.looping = None;
                self.input.play_back(None);
                (self.events)(Event::ServerNotice(format!(
                    "loop {}..{} ended: {why}",
                    looping.from, looping.to
                )));
                (self.events)(Event::LoopSet {
                    window: None,
                    version: self.current.as_ref().map(Plugin::version),
                });
            }
        }
    }
}
