//! Pausing the loop on command, resuming it, and stepping it a given number
//! of ticks: what a user stopping at tick 4,000 to look at the state needs.
//! A pause takes effect between two ticks; resuming starts the deadlines
//! again from that moment, so a long pause is not followed by a burst of
//! the ticks it missed.

use std::time::Instant;

use crate::event::Event;

use super::TickLoop;

impl TickLoop {
    /// Whether the loop is waiting for a command rather than a deadline.
    pub(super) fn holding(&self) -> bool {
        self.user_paused && self.steps_left == 0
    }

    pub(super) fn pause(&mut self) {
        let was = self.holding();
        self.user_paused = true;
        self.steps_left = 0;
        self.board.set_steps_left(0);
        self.board.set_paused(true);
        if !was {
            self.record_the_last_tick();
            (self.events)(Event::Paused {
                tick: self.ticks,
                running: self.current.is_some(),
            });
        }
    }

    pub(super) fn resume(&mut self) {
        if !self.user_paused {
            return;
        }
        self.user_paused = false;
        self.steps_left = 0;
        self.board.set_steps_left(0);
        self.board.set_paused(false);
        self.restart_deadlines();
        (self.events)(Event::Resumed { tick: self.ticks });
    }

    /// Copies are taken before each tick, so the last tick's writes would
    /// be in the history only once the next one starts: taken when the loop
    /// comes to hold instead, so that `replay` and `record` of a paused
    /// server reach the tick it stands at.
    fn record_the_last_tick(&mut self) {
        if let Some(state) = &self.state
            && self.current.is_some()
        {
            self.snapshot.take(state, self.ticks);
            for notice in self.snapshot.take_notices() {
                (self.events)(Event::ServerNotice(format!("state snapshot: {notice}")));
            }
        }
    }

    /// Runs `n` ticks, then holds again; only while paused, and not while
    /// another step runs (the control socket refuses that; one that gets
    /// through a race is said, not merged or dropped silently).
    pub(super) fn step(&mut self, n: u64) {
        if !self.user_paused || n == 0 {
            return;
        }
        if self.steps_left > 0 {
            (self.events)(Event::ServerNotice(format!(
                "ignored a step of {n}: a step of {} is running, {} ticks left",
                self.steps_asked, self.steps_left
            )));
            return;
        }
        self.steps_left = n;
        self.steps_asked = n;
        self.board.set_steps_left(n);
        self.restart_deadlines();
    }

    /// After a tick that completed: counts it against a step.
    pub(super) fn count_step(&mut self) {
        if self.steps_left == 0 {
            return;
        }
        self.steps_left -= 1;
        if self.steps_left == 0 {
            self.record_the_last_tick();
            // Done before no steps are left: a client that sees none left
            // and the step not done knows it was cut short.
            self.board.step_done();
        }
        self.board.set_steps_left(self.steps_left);
        if self.steps_left == 0 {
            (self.events)(Event::Stepped {
                ticks: self.steps_asked,
                tick: self.ticks,
            });
        }
    }

    fn restart_deadlines(&mut self) {
        if let Some(schedule) = &mut self.schedule {
            schedule.restart(Instant::now());
        }
    }
}
