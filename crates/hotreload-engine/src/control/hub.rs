//! The event stream of the control channel: every event the server prints,
//! numbered, kept for a while, and handed to the clients that follow it.
//!
//! Publishing never waits: it takes a lock held only for a push, and each
//! follower has a bounded queue; a follower whose queue is full (a client
//! that stopped reading) is dropped, and told why, instead of slowing the
//! thread that emitted the event (often the tick thread).

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Events kept for clients that ask from an earlier `seq`.
pub const HISTORY: usize = 10_000;
/// Events a follower may fall behind by before it is dropped.
pub const FOLLOWER_BUFFER: usize = 4_096;

/// One event as the channel sends it: a JSON line.
pub type EventLine = Arc<str>;

#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    /// (seq, line), oldest first.
    history: VecDeque<(u64, EventLine)>,
    followers: Vec<SyncSender<EventLine>>,
}

/// What a client following from a `seq` gets.
pub struct Following {
    /// The kept events from where it asked, to send first.
    pub backlog: Vec<EventLine>,
    /// Each new event, after the backlog; closed when the follower was
    /// dropped for falling behind.
    pub live: Receiver<EventLine>,
    /// The first `seq` it will see.
    pub first_seq: u64,
    /// When it asked for events no longer kept: the oldest one kept.
    pub gone_before: Option<u64>,
    /// When it asked from a `seq` that has not come yet: the next one.
    pub not_yet: Option<u64>,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    /// Numbers and sends one event (its kind, the text the server printed
    /// for it without the final newline, and its facts); the event's JSON
    /// line.
    pub fn publish(&self, kind: &str, text: &str, fields: &serde_json::Value) -> Option<EventLine> {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let Ok(mut inner) = self.inner.lock() else {
            return None;
        };
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let line: EventLine =
            hotreload_control::event_line(seq, time_ms, kind, text, fields).into();
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back((seq, Arc::clone(&line)));
        // A follower that is full is dropped: its receiver sees the channel
        // close and says why.
        inner
            .followers
            .retain(|f| match f.try_send(Arc::clone(&line)) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            });
        Some(line)
    }

    /// Starts following: from `from` (what is still kept of it, then new
    /// events), or from the next event.
    pub fn follow(&self, from: Option<u64>) -> Following {
        let (tx, rx) = sync_channel(FOLLOWER_BUFFER);
        let Ok(mut inner) = self.inner.lock() else {
            return Following {
                backlog: Vec::new(),
                live: rx,
                first_seq: 0,
                gone_before: None,
                not_yet: None,
            };
        };
        let oldest = inner.history.front().map_or(inner.next_seq, |(s, _)| *s);
        let not_yet = from.filter(|f| *f > inner.next_seq).map(|_| inner.next_seq);
        let start = from.unwrap_or(inner.next_seq).min(inner.next_seq);
        let gone_before = (start < oldest).then_some(oldest);
        let backlog = inner
            .history
            .iter()
            .filter(|(seq, _)| *seq >= start)
            .map(|(_, line)| Arc::clone(line))
            .collect();
        inner.followers.push(tx);
        Following {
            backlog,
            live: rx,
            first_seq: start.max(oldest),
            gone_before,
            not_yet,
        }
    }

    /// Ends every follower (their streams see the end), for a server that
    /// stops serving.
    pub fn close_followers(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.followers.clear();
        }
    }

    /// The `seq` the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.inner.lock().map_or(0, |i| i.next_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_get_the_kept_past_then_the_new_and_a_slow_one_is_dropped() {
        let hub = Hub::new();
        for i in 0..5 {
            hub.publish("notice", &format!("line {i}"), &serde_json::json!({}));
        }
        let from_two = hub.follow(Some(2));
        assert_eq!(from_two.backlog.len(), 3);
        assert_eq!(from_two.first_seq, 2);
        assert!(from_two.backlog[0].contains("\"seq\":2"));
        hub.publish("notice", "line 5", &serde_json::json!({}));
        assert!(
            from_two
                .live
                .try_recv()
                .is_ok_and(|l| l.contains("\"seq\":5"))
        );

        // One that never reads is dropped once its queue is full, and the
        // publisher never waits for it.
        let stuck = hub.follow(None);
        for i in 0..(FOLLOWER_BUFFER + 10) {
            hub.publish("notice", &format!("more {i}"), &serde_json::json!({}));
        }
        let mut got = 0;
        while stuck.live.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, FOLLOWER_BUFFER);
        assert!(matches!(
            stuck.live.try_recv(),
            Err(std::sync::mpsc::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn asking_for_what_is_gone_says_so() {
        let hub = Hub::new();
        for i in 0..(HISTORY + 3) {
            hub.publish("notice", &format!("{i}"), &serde_json::json!({}));
        }
        let f = hub.follow(Some(0));
        assert_eq!(f.gone_before, Some(3));
        assert_eq!(f.first_seq, 3);
        assert_eq!(f.backlog.len(), HISTORY);
    }
}
