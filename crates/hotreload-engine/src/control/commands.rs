//! What each control request does: read from the [`StatusBoard`] or handed
//! to the engine, and the one reply it gets. Requests that need the tick
//! thread go through the engine's [`StateDoor`](crate::engine::StateDoor),
//! which answers within milliseconds even while that thread is inside
//! plugin code.

use std::time::Duration;

use hotreload_control::{
    Command as Wire, ErrorCode, ServerMessage, parse_server_message, reply_error, reply_ok,
};
use serde_json::json;

use super::server::Wiring;
use crate::command::{Command, StopReason};
use crate::tick::DoorError;

/// The reply to a command other than `events`.
pub(super) fn carry_out(id: u64, command: &Wire, wiring: &Wiring) -> String {
    let status = wiring.board.snapshot();
    if status.stopping && !matches!(command, Wire::Status) {
        return reply_error(
            Some(id),
            ErrorCode::Stopping,
            &format!(
                "expected a running server for {}, found it stopping",
                command.name()
            ),
        );
    }
    match command {
        Wire::Status => reply_ok(
            id,
            json!({
                "version": status.version,
                "tick": status.tick,
                "paused": status.paused,
                "last_reload": status.last_reload,
                "watch_mode": status.watch_mode,
                "uptime_ms": status.uptime_ms,
                "max_late_us": status.latest_late_us,
                "state_file": status.saving,
                "stopping": status.stopping,
                "steps_left": wiring.board.steps_left(),
                "next_seq": wiring.hub.next_seq(),
                "history": wiring.door.history().map(|h| json!({
                    "oldest": h.oldest,
                    "newest": h.newest,
                    "rewound_to": h.rewound_to,
                    "ticks": h.ticks,
                    "bytes": h.bytes,
                    "bound_ticks": h.bound.ticks,
                    "bound_bytes": h.bound.bytes,
                    "cut_by_bytes": h.cut_by_bytes,
                })),
            }),
        ),
        Wire::Pause => {
            wiring.commander.send(Command::Pause);
            // Answered once the loop holds (a tick boundary away), so that
            // `ctl pause && ctl rewind 200` finds it paused; a tick that runs
            // on (plugin code stuck in a call) is not waited for past
            // PAUSE_PATIENCE: the reply then says it is still to come.
            let deadline = std::time::Instant::now() + PAUSE_PATIENCE;
            let mut now = wiring.board.snapshot();
            while !now.paused && !now.stopping && std::time::Instant::now() < deadline {
                std::thread::sleep(STEP_LOOK_EVERY);
                now = wiring.board.snapshot();
            }
            reply_ok(
                id,
                json!({"was_paused": status.paused, "paused": now.paused, "tick": now.tick}),
            )
        }
        Wire::Resume => {
            if status.version.is_none() {
                return nothing_runs(id, "resume");
            }
            wiring.commander.send(Command::Resume);
            reply_ok(
                id,
                json!({"was_paused": status.paused, "tick": status.tick}),
            )
        }
        Wire::Step { n } => step(id, *n, wiring),
        Wire::Stop => {
            wiring.commander.send(Command::Stop(StopReason::Requested));
            reply_ok(id, json!({"stopping": true}))
        }
        Wire::Reload => {
            wiring.commander.send(Command::Rebuild);
            reply_ok(id, json!({"rebuilding": true}))
        }
        Wire::Save => {
            if !status.saving {
                return reply_error(
                    Some(id),
                    ErrorCode::Unavailable,
                    "expected a server started with --state-file for save, found none",
                );
            }
            if status.version.is_none() {
                return reply_error(
                    Some(id),
                    ErrorCode::Unavailable,
                    "expected a version running on a state for save, found none yet",
                );
            }
            wiring.commander.send(Command::Save);
            reply_ok(id, json!({"saving": true}))
        }
        Wire::State => state_now(id, wiring),
        Wire::Versions => {
            let loaded = wiring.board.loaded();
            let on_disk = wiring.board.on_disk();
            let versions: Vec<serde_json::Value> = wiring
                .board
                .versions()
                .into_iter()
                .map(|r| {
                    let is_loaded = r.version.is_some_and(|v| loaded.contains(&v));
                    let is_on_disk = r.version.is_some_and(|v| on_disk.contains(&v));
                    json!({
                        "version": r.version,
                        "content_hash": r.content_hash,
                        "at_ms": r.at_ms,
                        "built_unix_ms": r.built_unix_ms,
                        "build_ms": r.build_ms,
                        "sources": r.sources,
                        "outcome": r.outcome,
                        "loaded": is_loaded,
                        "on_disk": is_on_disk,
                        "kept": if is_loaded {
                            "loaded"
                        } else if is_on_disk {
                            "on disk"
                        } else {
                            "gone"
                        },
                    })
                })
                .collect();
            reply_ok(
                id,
                json!({"versions": versions, "loaded": loaded, "on_disk": on_disk}),
            )
        }
        Wire::Get { path } => edited(id, wiring.door.get(path)),
        Wire::Set { path, value } => edited(id, wiring.door.set(path, value)),
        Wire::Undo => edited(id, wiring.door.undo()),
        Wire::Rollback { to } => match wiring.door.roll_back(*to) {
            Ok(done) => reply_ok(
                id,
                json!({
                    "from": done.from,
                    "to": done.to,
                    "tick": done.tick,
                    "carried": done.carried,
                    "reloaded": done.reloaded,
                }),
            ),
            Err(why) => door_refusal(id, &why),
        },
        Wire::Rewind { n } => rewound(id, wiring.door.rewind(crate::tick::RewindTo::Back(*n))),
        Wire::RewindTo { tick } => {
            rewound(id, wiring.door.rewind(crate::tick::RewindTo::Tick(*tick)))
        }
        Wire::Replay { from, to, with } => match wiring.door.replay(*from, *to, *with) {
            Ok(done) => {
                let mut result = done.fields();
                result["text"] = json!(crate::pipeline::replay::describe(&done));
                reply_ok(id, result)
            }
            Err(why) => door_refusal(id, &why),
        },
        Wire::Record { from, to, path } => {
            match wiring.door.record(*from, *to, std::path::Path::new(path)) {
                Ok((from, to, bytes)) => reply_ok(
                    id,
                    json!({"path": path, "from": from, "to": to, "bytes": bytes}),
                ),
                Err(why) => door_refusal(id, &why),
            }
        }
        Wire::Loop { window } => match wiring.door.set_loop(*window) {
            Ok(set) => reply_ok(
                id,
                json!({
                    "window": set.window.map(|(from, to)| json!({"from": from, "to": to})),
                    "tick": set.tick,
                }),
            ),
            Err(why) => door_refusal(id, &why),
        },
        Wire::Input { bytes } => match wiring.door.set_input(bytes.as_deref()) {
            Ok(()) => reply_ok(
                id,
                json!({
                    "bytes": bytes.as_ref().map_or(0, Vec::len),
                    "from_tick": status.tick,
                }),
            ),
            Err(why) => door_refusal(id, &why),
        },
        Wire::Events { .. } => reply_error(
            Some(id),
            ErrorCode::UnknownCommand,
            "events is answered by the stream itself",
        ),
    }
}

/// The reply to `rewind` or `rewind-to`.
fn rewound(id: u64, done: Result<crate::tick::Rewound, DoorError>) -> String {
    match done {
        Ok(r) => reply_ok(id, json!({"from": r.from, "to": r.to})),
        Err(why) => door_refusal(id, &why),
    }
}

/// The reply to `get`, `set` or `undo`.
fn edited(id: u64, done: Result<crate::tick::Edited, DoorError>) -> String {
    match done {
        Ok(e) => reply_ok(
            id,
            json!({"path": e.path, "old": e.old, "value": e.new, "tick": e.tick}),
        ),
        Err(why) => door_refusal(id, &why),
    }
}

/// A request the tick thread did not carry out, as an error reply.
fn door_refusal(id: u64, why: &DoorError) -> String {
    let code = match why {
        DoorError::Unavailable(_) => ErrorCode::Unavailable,
        DoorError::NotPaused(_) => ErrorCode::NotPaused,
        DoorError::Refused(_) => ErrorCode::BadArgument,
    };
    reply_error(Some(id), code, &why.to_string())
}

/// How long `state` waits for the tick thread to show the state.
const STATE_WAIT: Duration = Duration::from_secs(2);

/// Asks the tick thread for the state between two ticks and replies with
/// what it showed; the one command that needs the tick thread, so it says
/// so when that thread is busy (a plugin call in progress) instead of
/// waiting for it.
fn state_now(id: u64, wiring: &Wiring) -> String {
    // After a fault with nothing to take over no version runs, but the
    // state it left is there to show.
    let ever_ran = wiring.board.versions().iter().any(|r| r.version.is_some());
    if wiring.board.snapshot().version.is_none() && !ever_ran {
        return reply_error(
            Some(id),
            ErrorCode::Unavailable,
            "expected a version running on a state, found none yet",
        );
    }
    if let Some((for_, version)) = wiring
        .board
        .busy_for()
        .filter(|(for_, _)| *for_ > crate::tick::door::BUSY_LIMIT)
    {
        return door_refusal(id, &crate::tick::door::busy_error(for_, version));
    }
    let following = wiring.hub.follow(None);
    wiring.commander.send(Command::ReportState);
    let deadline = std::time::Instant::now() + STATE_WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = following.live.recv_timeout(left) else {
            return reply_error(
                Some(id),
                ErrorCode::Unavailable,
                &format!(
                    "expected the tick thread to show the state within {} s, found it busy (a plugin call in progress?); status still answers",
                    STATE_WAIT.as_secs()
                ),
            );
        };
        if let Ok(ServerMessage::Event {
            kind, text, fields, ..
        }) = parse_server_message(&line)
            && kind == "state"
            && fields["moment"] == "on_request"
        {
            return reply_ok(
                id,
                json!({
                    "text": text,
                    "version": fields["version"],
                    "tick": fields["tick"],
                    "size": fields["size"],
                    "values": fields["values"],
                }),
            );
        }
    }
}

/// The refusal of `what` when no version runs (the last one faulted with
/// nothing to take over, or none loaded yet).
fn nothing_runs(id: u64, what: &str) -> String {
    reply_error(
        Some(id),
        ErrorCode::Unavailable,
        &format!(
            "expected a version running for {what}, found none: ticking is paused until a good build or a rollback (hotreload ctl versions shows what is kept)"
        ),
    )
}

/// How often a `step` looks at whether its ticks have run.
const STEP_LOOK_EVERY: Duration = Duration::from_millis(2);
/// How long a `pause` waits for the loop to hold before it replies.
const PAUSE_PATIENCE: Duration = Duration::from_millis(250);

/// `step N`: only while paused and no other step runs; replied to once
/// the N ticks have run (so that a script's next request sees their
/// result), or when something ends the step early (a fault with nothing
/// to take over, a pause, the server stopping), saying which.
fn step(id: u64, n: u64, wiring: &Wiring) -> String {
    let status = wiring.board.snapshot();
    if status.version.is_none() {
        return nothing_runs(id, "step");
    }
    let left = wiring.board.steps_left();
    if left > 0 {
        return reply_error(
            Some(id),
            ErrorCode::NotPaused,
            &format!(
                "expected a paused server for step, found a step in progress with {left} ticks left"
            ),
        );
    }
    if !status.paused {
        return reply_error(
            Some(id),
            ErrorCode::NotPaused,
            &format!(
                "expected a paused server for step (pause it first), found it ticking at tick {}",
                status.tick
            ),
        );
    }
    let from = status.tick;
    let done_before = wiring.board.steps_done();
    wiring.commander.send(Command::Step(n));
    let mut seen_running = false;
    loop {
        std::thread::sleep(STEP_LOOK_EVERY);
        let now = wiring.board.snapshot();
        let left = wiring.board.steps_left();
        seen_running |= left > 0;
        if wiring.board.steps_done() > done_before {
            return reply_ok(id, json!({"ticks": n, "from_tick": from, "tick": now.tick}));
        }
        let ended = if now.stopping {
            Some("the server is stopping")
        } else if now.version.is_none() {
            Some("the version ticking faulted with nothing to take over")
        } else if !now.paused {
            Some("the server was resumed meanwhile")
        } else if seen_running && left == 0 {
            Some("a pause came before its end")
        } else {
            None
        };
        if let Some(why) = ended {
            return reply_error(
                Some(id),
                ErrorCode::Unavailable,
                &format!(
                    "expected {n} ticks from tick {from}, found the step cut short at tick {} ({why})",
                    now.tick
                ),
            );
        }
    }
}
