//! The input a host passes each tick: what a game's window thread read from
//! the keyboard, the requests a service queued, whatever besides the state
//! makes a tick differ. The plugin sees it in the host context of the
//! extended table's `tick`; the history records it with the tick, so that
//! `replay`, `loop` and a recording file feed each tick the same bytes
//! again, which is what makes a replay of an interactive run exact.
//!
//! Two ways in. A value set through the engine's handle (or `hotreload ctl
//! input`) is passed to every tick from then on, until replaced: the shape
//! of a key or button state. A source the host installs is asked once per
//! tick, on the tick thread, for that tick's bytes: the shape of an event
//! queue drained at each tick. Inside a `loop` window, a tick the history
//! recorded gets its recorded input, not the live one, the way Handmade
//! Hero's looped live editing plays the recorded input back.

use std::sync::Arc;

use hotreload_abi::MAX_INPUT;

use crate::event::{Event, EventSink};
use crate::state::history::Page;

/// Asked once per tick, before it runs, for its input: `tick` is its index
/// (ticks completed before it); the bytes written into `into` (cleared
/// first) are what the tick is passed, none for an empty buffer. It runs on
/// the tick thread, between two ticks: it must be quick.
pub type InputSource = Box<dyn FnMut(u64, &mut Vec<u8>) + Send>;

/// A change to where the ticks' input comes from.
pub enum InputChange {
    /// Pass these bytes to every tick from the next on (`None`: none).
    Set(Option<Page>),
    /// Ask this source at every tick from the next on.
    Source(InputSource),
}

// The control protocol bounds an input as the ABI does.
const _: () = assert!(hotreload_control::MAX_INPUT == MAX_INPUT);

/// Checks an input a host wants to set: at most [`MAX_INPUT`] bytes.
pub fn check(input: &[u8]) -> Result<(), String> {
    if input.len() > MAX_INPUT {
        return Err(format!(
            "expected an input of at most {MAX_INPUT} bytes (HOTRELOAD_MAX_INPUT) for a tick, \
             found {} bytes",
            input.len()
        ));
    }
    Ok(())
}

/// The recorded input of a loop's window, from its first tick.
struct Playback {
    from: u64,
    /// One per recorded tick of the window; a tick past these gets the
    /// live input (it had not run when the loop was set).
    inputs: Vec<Option<Page>>,
}

#[derive(Default)]
pub(super) struct HostInput {
    source: Option<InputSource>,
    /// The value set, or the source's last answer (reused while the source
    /// answers the same bytes, so that a history of identical inputs
    /// shares one copy).
    latest: Option<Page>,
    buffer: Vec<u8>,
    playback: Option<Playback>,
    /// The version last told that its `tick` does not see the input.
    said_unseen: Option<u64>,
    said_too_long: bool,
}

impl HostInput {
    pub(super) fn change(&mut self, change: InputChange) {
        match change {
            InputChange::Set(input) => {
                self.source = None;
                self.latest = input.filter(|i| !i.is_empty());
            }
            InputChange::Source(source) => {
                self.source = Some(source);
                self.latest = None;
            }
        }
    }

    /// Plays `inputs` (recorded for the ticks from `from` on) back to the
    /// ticks of a loop's window; `None` ends the playback.
    pub(super) fn play_back(&mut self, recorded: Option<(u64, Vec<Option<Page>>)>) {
        self.playback = recorded.map(|(from, inputs)| Playback { from, inputs });
    }

    /// The input tick `tick` is passed. `version` is the version about to
    /// run it and `seen` whether its `tick` gets the host context: a
    /// version that cannot see an input it is passed is said once.
    pub(super) fn for_tick(
        &mut self,
        tick: u64,
        version: u64,
        seen: bool,
        events: &EventSink,
    ) -> Option<Page> {
        let recorded = self.playback.as_ref().and_then(|p| {
            let index = usize::try_from(tick.checked_sub(p.from)?).ok()?;
            p.inputs.get(index)
        });
        let input = match recorded {
            Some(recorded) => recorded.clone(),
            None => self.live(tick, events),
        }?;
        if !seen && self.said_unseen != Some(version) {
            self.said_unseen = Some(version);
            events(Event::ServerNotice(format!(
                "v{version} does not see the input the host passes ({} bytes at tick {tick}): \
                 its extended table has no `tick` taking the host context \
                 (logic_api_ext_t.tick)",
                input.len()
            )));
        }
        Some(input)
    }

    fn live(&mut self, tick: u64, events: &EventSink) -> Option<Page> {
        let Some(source) = &mut self.source else {
            return self.latest.clone();
        };
        self.buffer.clear();
        source(tick, &mut self.buffer);
        if self.buffer.is_empty() {
            return None;
        }
        if let Err(why) = check(&self.buffer) {
            if !std::mem::replace(&mut self.said_too_long, true) {
                events(Event::ServerNotice(format!(
                    "the host's input for tick {tick} is refused, and every one too long after \
                     it: {why}; those ticks are passed none"
                )));
            }
            return None;
        }
        match &self.latest {
            Some(latest) if **latest == self.buffer[..] => {}
            _ => self.latest = Some(Arc::from(&self.buffer[..])),
        }
        self.latest.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn sink() -> (EventSink, Arc<Mutex<Vec<String>>>) {
        let said = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&said);
        let sink: EventSink = Arc::new(move |e: Event| {
            if let Event::ServerNotice(text) = e {
                into.lock().unwrap().push(text);
            }
        });
        (sink, said)
    }

    #[test]
    fn a_set_value_sticks_and_a_source_is_asked_every_tick() {
        let (events, said) = sink();
        let mut input = HostInput::default();
        assert!(input.for_tick(0, 1, true, &events).is_none());
        input.change(InputChange::Set(Some(Arc::from(&b"left"[..]))));
        for tick in 1..4 {
            assert_eq!(
                input.for_tick(tick, 1, true, &events).as_deref(),
                Some(&b"left"[..])
            );
        }
        input.change(InputChange::Source(Box::new(|tick, into| {
            into.extend_from_slice(&[(tick / 2) as u8; 3]);
        })));
        let a = input.for_tick(4, 1, true, &events).unwrap();
        let b = input.for_tick(5, 1, true, &events).unwrap();
        let c = input.for_tick(6, 1, true, &events).unwrap();
        assert_eq!(&*a, &[2, 2, 2]);
        assert!(Arc::ptr_eq(&a, &b), "the same answer is shared, not copied");
        assert_eq!(&*c, &[3, 3, 3]);
        assert!(said.lock().unwrap().is_empty());
    }

    #[test]
    fn a_loop_plays_the_recorded_input_back_and_live_input_after_it() {
        let (events, _) = sink();
        let mut input = HostInput::default();
        input.change(InputChange::Set(Some(Arc::from(&b"live"[..]))));
        input.play_back(Some((10, vec![Some(Arc::from(&b"rec"[..])), None])));
        assert_eq!(
            input.for_tick(10, 1, true, &events).as_deref(),
            Some(&b"rec"[..])
        );
        assert!(
            input.for_tick(11, 1, true, &events).is_none(),
            "recorded as none"
        );
        assert_eq!(
            input.for_tick(12, 1, true, &events).as_deref(),
            Some(&b"live"[..])
        );
        assert_eq!(
            input.for_tick(9, 1, true, &events).as_deref(),
            Some(&b"live"[..])
        );
        input.play_back(None);
        assert_eq!(
            input.for_tick(10, 1, true, &events).as_deref(),
            Some(&b"live"[..])
        );
    }

    #[test]
    fn what_is_too_long_or_unseen_is_said_once() {
        let (events, said) = sink();
        let mut input = HostInput::default();
        input.change(InputChange::Source(Box::new(|tick, into| {
            into.resize(if tick < 2 { MAX_INPUT + 1 } else { 1 }, 7);
        })));
        assert!(input.for_tick(0, 1, true, &events).is_none());
        assert!(input.for_tick(1, 1, true, &events).is_none());
        assert!(input.for_tick(2, 1, false, &events).is_some());
        assert!(input.for_tick(3, 1, false, &events).is_some());
        assert!(input.for_tick(4, 2, false, &events).is_some());
        let said = said.lock().unwrap();
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(said[0].contains("at most 2048 bytes") && said[0].contains("2049"));
        assert!(said[1].starts_with("v1 does not see"), "{}", said[1]);
        assert!(said[2].starts_with("v2 does not see"), "{}", said[2]);
        assert!(check(&[0; MAX_INPUT]).is_ok());
    }
}
