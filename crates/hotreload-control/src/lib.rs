//! The control protocol of a running `hotreload` server.
//!
//! A server listens on a local Unix socket; a client (`hotreload ctl`, an
//! editor, a script) connects, reads the server's `hello`, and sends
//! requests. Everything is one JSON object per line, each line at most
//! [`MAX_LINE`] bytes:
//!
//! ```text
//! <- {"hello":{"protocol":1,"server":"hotreload 0.1.0","pid":4242}}
//! -> {"id":1,"cmd":"status"}
//! <- {"id":1,"ok":true,"result":{"version":2,"tick":812,"paused":false,...}}
//! -> {"id":2,"cmd":"step","n":3}
//! <- {"id":2,"ok":false,"error":{"code":"not_paused","message":"..."}}
//! -> {"id":3,"cmd":"events","from":0}
//! <- {"id":3,"ok":true,"result":{"from":0}}
//! <- {"event":{"seq":0,"time_ms":1764590000000,"kind":"running","text":"[server] running"}}
//! ```
//!
//! Every request gets exactly one reply carrying its `id`; a line that is
//! not a request (bad JSON, too long, no `id`, an unknown command, a wrong
//! argument) gets an error reply saying what was expected and what was
//! found, with the `id` when one could be read and `null` otherwise. Events
//! come only to a client that asked for them, each with a sequence number
//! that increases by one per event, so that a client can ask again from
//! where it stopped.
//!
//! This crate has the messages ([`Request`], [`Command`], [`ErrorCode`] and
//! the line builders), the limits, and where a server's socket is
//! ([`socket_path`]); it does not depend on the engine, so a client needs
//! only this. `docs/protocol.md` describes the protocol for people.

mod message;
mod path;

pub use message::{
    Command, ErrorCode, MAX_INPUT, Refused, Request, ServerMessage, event_line, hello_line, hex,
    parse_request, parse_server_message, reply_error, reply_ok, unhex,
};
pub use path::{effective_uid, runtime_folder, socket_path};

/// The protocol version a server states in its `hello`; a client refuses a
/// server whose version it does not know.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest line either side sends or accepts, newline included. A
/// longer request is refused (and the rest of it, up to its newline,
/// skipped); events carry one rendered line each, far below it.
pub const MAX_LINE: usize = 64 * 1024;

/// The most ticks one `step` may ask for.
pub const MAX_STEP: u64 = 1_000_000;
