//! The copy of the state taken before plugin code runs, so that a fault can
//! put the state back exactly as it was.
//!
//! Small states are copied before every tick: a few hundred bytes cost
//! nanoseconds. Copying a large state every tick would cost more than the tick
//! itself (64 MB is several milliseconds), so the copy budget is bounded:
//! at most [`BYTES_PER_TICK`] bytes per tick on average. A state of `S` bytes
//! is copied every `ceil(S / BYTES_PER_TICK)` ticks, and a fault restores the
//! most recent copy, so up to that many ticks of progress can be lost. The
//! fault line names the tick the state was restored to.

use crate::state::State;

/// Average copy budget per tick.
pub const BYTES_PER_TICK: usize = 1 << 20;

pub struct Snapshot {
    bytes: Vec<u8>,
    /// The tick index the copy was taken at (before that tick ran).
    tick: Option<u64>,
    every: u64,
}

impl Snapshot {
    pub fn new(size: usize) -> Snapshot {
        Snapshot {
            bytes: vec![0; size],
            tick: None,
            every: size.div_ceil(BYTES_PER_TICK).max(1) as u64,
        }
    }

    /// Ticks between two copies.
    pub fn interval(&self) -> u64 {
        self.every
    }

    /// Whether a copy is due before tick `tick` runs.
    #[inline]
    pub fn due(&self, tick: u64) -> bool {
        self.tick.is_none_or(|last| tick >= last + self.every)
    }

    /// Copies the state as it is before tick `tick`.
    #[inline]
    pub fn take(&mut self, state: &State, tick: u64) {
        self.bytes.copy_from_slice(state.bytes());
        self.tick = Some(tick);
    }

    /// Puts the last copy back; returns the tick it was taken at, or `None`
    /// if no copy was ever taken (the state is left as it is).
    pub fn restore(&self, state: &mut State) -> Option<u64> {
        let tick = self.tick?;
        state.bytes_mut().copy_from_slice(&self.bytes);
        Some(tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_states_every_tick_large_ones_within_the_budget() {
        assert_eq!(Snapshot::new(16).interval(), 1);
        assert_eq!(Snapshot::new(BYTES_PER_TICK).interval(), 1);
        assert_eq!(Snapshot::new(64 << 20).interval(), 64);
    }

    #[test]
    fn restore_puts_back_the_bytes_and_names_the_tick() {
        let mut state = State::zeroed(8).expect("alloc");
        let mut snap = Snapshot::new(8);
        assert_eq!(snap.restore(&mut state), None);
        state.bytes_mut()[0] = 7;
        assert!(snap.due(3));
        snap.take(&state, 3);
        assert!(!snap.due(3));
        state.bytes_mut()[0] = 99;
        assert_eq!(snap.restore(&mut state), Some(3));
        assert_eq!(state.bytes()[0], 7);
    }
}
