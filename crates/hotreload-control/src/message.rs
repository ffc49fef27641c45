//! Requests, replies, events and the `hello`, as JSON lines.

use serde_json::{Map, Value, json};

use crate::{MAX_LINE, MAX_STEP, PROTOCOL_VERSION};

/// A request a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the client; the reply carries it back.
    pub id: u64,
    pub command: Command,
}

/// What a request asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// The running version, the tick, paused or not, the last reload's
    /// outcome, the watch mode, the uptime, the tick lateness.
    Status,
    /// Stop ticking at the next tick boundary.
    Pause,
    /// Tick again, deadlines restarted from now (no burst of missed ticks).
    Resume,
    /// While paused: run exactly `n` ticks, then pause again.
    Step { n: u64 },
    /// Stop the server as SIGTERM does.
    Stop,
    /// Build and reload now, even if no file changed.
    Reload,
    /// Write the state file now.
    Save,
    /// The state as the server shows it, read between two ticks.
    State,
    /// Every build that reached the loader: its version, content hash,
    /// when, what became of it, and whether it is loaded.
    Versions,
    /// One value of the state, by its path (`hp`, `pos.x`,
    /// `enemies[2].hp`, `grid[1][2]`, or `@12:i32` by offset and type).
    Get { path: String },
    /// Writes one value between two ticks, checked against the layout.
    Set { path: String, value: String },
    /// Takes the latest `set` back.
    Undo,
    /// Brings back an earlier version still loaded (`to`; default: the
    /// newest one before the running version).
    Rollback { to: Option<u64> },
    /// While paused: put the state and the tick counter back `n` ticks
    /// from the history.
    Rewind { n: u64 },
    /// While paused: put the state back to tick `tick` from the history.
    RewindTo { tick: u64 },
    /// Run the recorded ticks `from..to` (default: all the history holds)
    /// again with version `with` (default: the running one) in a throwaway
    /// process, and say where the result first differs.
    Replay {
        from: Option<u64>,
        to: Option<u64>,
        with: Option<u64>,
    },
    /// Tick the window `from..to` over and over, rewinding at its end
    /// (`None`: stop looping).
    Loop { window: Option<(u64, u64)> },
    /// Write the recorded ticks `from..to` (default: all the history
    /// holds) to the file `path`, for `hotreload --replay`.
    Record {
        from: Option<u64>,
        to: Option<u64>,
        path: String,
    },
    /// Send every event from `from` on (what is still kept of the past,
    /// then each new one); `None`: only new ones.
    Events { from: Option<u64> },
    /// Pass these bytes to every tick from the next on (`None`: none), in
    /// the host context of the extended table's `tick`. On the wire as
    /// `"hex"`, or `"off": true`.
    Input { bytes: Option<Vec<u8>> },
}

/// The most bytes one tick is passed (`HOTRELOAD_MAX_INPUT`).
pub const MAX_INPUT: usize = 2048;

impl Command {
    /// Its name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Step { .. } => "step",
            Command::Stop => "stop",
            Command::Reload => "reload",
            Command::Save => "save",
            Command::State => "state",
            Command::Versions => "versions",
            Command::Get { .. } => "get",
            Command::Set { .. } => "set",
            Command::Undo => "undo",
            Command::Rollback { .. } => "rollback",
            Command::Rewind { .. } => "rewind",
            Command::RewindTo { .. } => "rewind-to",
            Command::Replay { .. } => "replay",
            Command::Loop { .. } => "loop",
            Command::Record { .. } => "record",
            Command::Events { .. } => "events",
            Command::Input { .. } => "input",
        }
    }

    /// The request line for this command.
    pub fn to_line(&self, id: u64) -> String {
        let mut object = Map::new();
        object.insert("id".into(), json!(id));
        object.insert("cmd".into(), json!(self.name()));
        match self {
            Command::Step { n } => {
                object.insert("n".into(), json!(n));
            }
            Command::Events { from: Some(from) } => {
                object.insert("from".into(), json!(from));
            }
            Command::Get { path } => {
                object.insert("path".into(), json!(path));
            }
            Command::Set { path, value } => {
                object.insert("path".into(), json!(path));
                object.insert("value".into(), json!(value));
            }
            Command::Rollback { to: Some(to) } => {
                object.insert("to".into(), json!(to));
            }
            Command::Rewind { n } => {
                object.insert("n".into(), json!(n));
            }
            Command::RewindTo { tick } => {
                object.insert("tick".into(), json!(tick));
            }
            Command::Replay { from, to, with } => {
                for (key, value) in [("from", from), ("to", to), ("with", with)] {
                    if let Some(v) = value {
                        object.insert(key.into(), json!(v));
                    }
                }
            }
            Command::Record { from, to, path } => {
                for (key, value) in [("from", from), ("to", to)] {
                    if let Some(v) = value {
                        object.insert(key.into(), json!(v));
                    }
                }
                object.insert("path".into(), json!(path));
            }
            Command::Loop { window } => match window {
                Some((from, to)) => {
                    object.insert("from".into(), json!(from));
                    object.insert("to".into(), json!(to));
                }
                None => {
                    object.insert("off".into(), json!(true));
                }
            },
            Command::Input { bytes } => match bytes {
                Some(bytes) => {
                    object.insert("hex".into(), json!(hex(bytes)));
                }
                None => {
                    object.insert("off".into(), json!(true));
                }
            },
            _ => {}
        }
        format!("{}\n", Value::Object(object))
    }
}

/// Every command, by name, for error messages and `--help`.
pub const COMMANDS: &[&str] = &[
    "status",
    "pause",
    "resume",
    "step",
    "stop",
    "reload",
    "save",
    "state",
    "versions",
    "get",
    "set",
    "undo",
    "rollback",
    "rewind",
    "rewind-to",
    "replay",
    "loop",
    "record",
    "events",
    "input",
];

/// `bytes` as lowercase hex digits, two per byte.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads hex digits (two per byte, either case), saying where they stop
/// being hex.
pub fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!(
            "expected an even number of hex digits, found {}",
            text.len()
        ));
    }
    text.as_bytes()
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "expected hex digits, found {:?} at byte {}",
                        String::from_utf8_lossy(pair),
                        i * 2
                    )
                })
        })
        .collect()
}

/// Why a request was refused, as the error reply says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The line is not a JSON object.
    BadJson,
    /// The line is longer than [`MAX_LINE`].
    TooLong,
    /// No `id`, or one that is not a non-negative integer.
    BadId,
    /// No `cmd`, or one this server does not know.
    UnknownCommand,
    /// An argument missing, of the wrong type, or out of range.
    BadArgument,
    /// The command needs the server paused, and it is not.
    NotPaused,
    /// Nothing to do it to (no version running, no state file asked for).
    Unavailable,
    /// The server is stopping and takes no more commands.
    Stopping,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::TooLong => "too_long",
            ErrorCode::BadId => "bad_id",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::BadArgument => "bad_argument",
            ErrorCode::NotPaused => "not_paused",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Stopping => "stopping",
        }
    }

    pub fn from_name(name: &str) -> Option<ErrorCode> {
        [
            ErrorCode::BadJson,
            ErrorCode::TooLong,
            ErrorCode::BadId,
            ErrorCode::UnknownCommand,
            ErrorCode::BadArgument,
            ErrorCode::NotPaused,
            ErrorCode::Unavailable,
            ErrorCode::Stopping,
        ]
        .into_iter()
        .find(|c| c.as_str() == name)
    }
}

/// A line that is not a request the server can carry out: the error reply
/// to send (with the request's `id` when it could be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

impl Refused {
    fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Refused {
        Refused {
            id,
            code,
            message: message.into(),
        }
    }

    /// The error reply line.
    pub fn to_line(&self) -> String {
        reply_error(self.id, self.code, &self.message)
    }
}

/// What a JSON value is, for "found …" in a message.
fn kind_of(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a long string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Reads one request line (without its newline, or with it).
pub fn parse_request(line: &[u8]) -> Result<Request, Refused> {
    if line.len() > MAX_LINE {
        return Err(Refused::new(
            None,
            ErrorCode::TooLong,
            format!(
                "expected a line of at most {MAX_LINE} bytes, found {} bytes",
                line.len()
            ),
        ));
    }
    let text = std::str::from_utf8(line).map_err(|e| {
        Refused::new(
            None,
            ErrorCode::BadJson,
            format!(
                "expected UTF-8 JSON, found invalid UTF-8 at byte {}",
                e.valid_up_to()
            ),
        )
    })?;
    let value: Value = serde_json::from_str(text.trim_end_matches(['\n', '\r'])).map_err(|e| {
        Refused::new(
            None,
            ErrorCode::BadJson,
            format!("expected one JSON object, found: {e}"),
        )
    })?;
    let Value::Object(object) = value else {
        return Err(Refused::new(
            None,
            ErrorCode::BadJson,
            format!("expected a JSON object, found {}", kind_of(&value)),
        ));
    };
    let id = match object.get("id") {
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(other) => {
            return Err(Refused::new(
                None,
                ErrorCode::BadId,
                format!(
                    "expected \"id\" to be a non-negative integer, found {}",
                    kind_of(other)
                ),
            ));
        }
        None => {
            return Err(Refused::new(
                None,
                ErrorCode::BadId,
                "expected an \"id\" (a non-negative integer), found none",
            ));
        }
    };
    let id_value = id.unwrap_or(0);
    let name = match object.get("cmd") {
        Some(Value::String(name)) => name.as_str(),
        Some(other) => {
            return Err(Refused::new(
                id,
                ErrorCode::UnknownCommand,
                format!(
                    "expected \"cmd\" to be one of {}, found {}",
                    COMMANDS.join(", "),
                    kind_of(other)
                ),
            ));
        }
        None => {
            return Err(Refused::new(
                id,
                ErrorCode::UnknownCommand,
                format!(
                    "expected a \"cmd\" (one of {}), found none",
                    COMMANDS.join(", ")
                ),
            ));
        }
    };
    let count = |key: &str, at_least: u64, at_most: u64| -> Result<Option<u64>, Refused> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n))
                if n.as_u64()
                    .is_some_and(|v| (at_least..=at_most).contains(&v)) =>
            {
                Ok(n.as_u64())
            }
            Some(other) => Err(Refused::new(
                id,
                ErrorCode::BadArgument,
                format!(
                    "expected \"{key}\" to be an integer from {at_least} to {at_most}, found {}",
                    kind_of(other)
                ),
            )),
        }
    };
    let text = |key: &str| -> Result<String, Refused> {
        match object.get(key) {
            Some(Value::String(v)) if v.len() <= 4096 => Ok(v.clone()),
            // A number or a boolean stands for itself.
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
            Some(other) => Err(Refused::new(
                id,
                ErrorCode::BadArgument,
                format!(
                    "expected \"{key}\" to be a string of at most 4096 bytes, found {}",
                    kind_of(other)
                ),
            )),
            None => Err(Refused::new(
                id,
                ErrorCode::BadArgument,
                format!("expected a \"{key}\" for {name}, found none"),
            )),
        }
    };
    let command = match name {
        "status" => Command::Status,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "step" => Command::Step {
            n: count("n", 1, MAX_STEP)?.unwrap_or(1),
        },
        "stop" => Command::Stop,
        "reload" => Command::Reload,
        "save" => Command::Save,
        "state" => Command::State,
        "versions" => Command::Versions,
        "get" => Command::Get {
            path: text("path")?,
        },
        "set" => Command::Set {
            path: text("path")?,
            value: text("value")?,
        },
        "undo" => Command::Undo,
        "rollback" => Command::Rollback {
            to: count("to", 1, u64::MAX)?,
        },
        "rewind" => Command::Rewind {
            n: count("n", 1, u64::MAX)?.unwrap_or(1),
        },
        "rewind-to" => Command::RewindTo {
            tick: count("tick", 0, u64::MAX)?.ok_or_else(|| {
                Refused::new(
                    id,
                    ErrorCode::BadArgument,
                    "expected a \"tick\" for rewind-to, found none",
                )
            })?,
        },
        "replay" => Command::Replay {
            from: count("from", 0, u64::MAX)?,
            to: count("to", 0, u64::MAX)?,
            with: count("with", 1, u64::MAX)?,
        },
        "loop" => {
            let off = matches!(object.get("off"), Some(Value::Bool(true)));
            let from = count("from", 0, u64::MAX)?;
            let to = count("to", 0, u64::MAX)?;
            match (off, from, to) {
                (true, None, None) => Command::Loop { window: None },
                (false, Some(from), Some(to)) => Command::Loop {
                    window: Some((from, to)),
                },
                _ => {
                    return Err(Refused::new(
                        id,
                        ErrorCode::BadArgument,
                        "expected \"from\" and \"to\" for loop, or \"off\": true, found neither",
                    ));
                }
            }
        }
        "record" => Command::Record {
            from: count("from", 0, u64::MAX)?,
            to: count("to", 0, u64::MAX)?,
            path: text("path")?,
        },
        "events" => Command::Events {
            from: count("from", 0, u64::MAX)?,
        },
        "input" => {
            let off = matches!(object.get("off"), Some(Value::Bool(true)));
            match (off, object.contains_key("hex")) {
                (true, false) => Command::Input { bytes: None },
                (false, true) => {
                    let bytes = unhex(&text("hex")?).map_err(|why| {
                        Refused::new(id, ErrorCode::BadArgument, format!("\"hex\": {why}"))
                    })?;
                    if bytes.len() > MAX_INPUT {
                        return Err(Refused::new(
                            id,
                            ErrorCode::BadArgument,
                            format!(
                                "expected an input of at most {MAX_INPUT} bytes, found {}",
                                bytes.len()
                            ),
                        ));
                    }
                    Command::Input { bytes: Some(bytes) }
                }
                _ => {
                    return Err(Refused::new(
                        id,
                        ErrorCode::BadArgument,
                        "expected \"hex\" for input, or \"off\": true, found neither or both",
                    ));
                }
            }
        }
        other => {
            let shown = if other.len() > 40 {
                "a long name"
            } else {
                other
            };
            return Err(Refused::new(
                id,
                ErrorCode::UnknownCommand,
                format!(
                    "expected \"cmd\" to be one of {}, found {shown:?}",
                    COMMANDS.join(", ")
                ),
            ));
        }
    };
    Ok(Request {
        id: id_value,
        command,
    })
}

/// The server's first line.
pub fn hello_line(server: &str, pid: u32) -> String {
    format!(
        "{}\n",
        json!({"hello": {"protocol": PROTOCOL_VERSION, "server": server, "pid": pid}})
    )
}

/// A reply that carried out request `id`.
pub fn reply_ok(id: u64, result: Value) -> String {
    format!("{}\n", json!({"id": id, "ok": true, "result": result}))
}

/// A reply that refused request `id` (`None`: the id could not be read).
pub fn reply_error(id: Option<u64>, code: ErrorCode, message: &str) -> String {
    format!(
        "{}\n",
        json!({"id": id, "ok": false, "error": {"code": code.as_str(), "message": message}})
    )
}

/// One event: its sequence number, when (milliseconds since the Unix
/// epoch), its kind (`swapped`, `fault`, …) and the line the server printed
/// for it.
pub fn event_line(seq: u64, time_ms: u64, kind: &str, text: &str, fields: &Value) -> String {
    let mut event = json!({"seq": seq, "time_ms": time_ms, "kind": kind, "text": text});
    if fields.as_object().is_some_and(|f| !f.is_empty()) {
        event["fields"] = fields.clone();
    }
    format!("{}\n", json!({ "event": event }))
}

/// A line from the server, as a client reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerMessage {
    Hello {
        protocol: u32,
        server: String,
        pid: u32,
    },
    Reply {
        id: Option<u64>,
        result: Result<Value, (String, String)>,
    },
    Event {
        seq: u64,
        time_ms: u64,
        kind: String,
        text: String,
        /// The event's facts (`version`, `tick`, …); an empty object for
        /// events that have none beyond their text.
        fields: Value,
    },
}

/// Reads one line from the server; what was wrong with it otherwise.
pub fn parse_server_message(line: &str) -> Result<ServerMessage, String> {
    let value: Value = serde_json::from_str(line.trim_end())
        .map_err(|e| format!("expected a JSON line from the server, found: {e}"))?;
    if let Some(hello) = value.get("hello") {
        let protocol = hello.get("protocol").and_then(Value::as_u64);
        return match protocol {
            Some(p) => Ok(ServerMessage::Hello {
                protocol: u32::try_from(p).unwrap_or(u32::MAX),
                server: hello
                    .get("server")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                pid: hello
                    .get("pid")
                    .and_then(Value::as_u64)
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or(0),
            }),
            None => Err("expected a protocol number in the server's hello, found none".into()),
        };
    }
    if let Some(event) = value.get("event") {
        let text = |k: &str| {
            event
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let number = |k: &str| event.get(k).and_then(Value::as_u64).unwrap_or(0);
        return Ok(ServerMessage::Event {
            seq: number("seq"),
            time_ms: number("time_ms"),
            kind: text("kind"),
            text: text("text"),
            fields: event.get("fields").cloned().unwrap_or_else(|| json!({})),
        });
    }
    let id = value.get("id").and_then(Value::as_u64);
    match value.get("ok").and_then(Value::as_bool) {
        Some(true) => Ok(ServerMessage::Reply {
            id,
            result: Ok(value.get("result").cloned().unwrap_or(Value::Null)),
        }),
        Some(false) => {
            let error = value.get("error");
            let field = |k: &str| {
                error
                    .and_then(|e| e.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            Ok(ServerMessage::Reply {
                id,
                result: Err((field("code"), field("message"))),
            })
        }
        None => Err(format!(
            "expected a hello, a reply or an event from the server, found: {}",
            line.chars().take(120).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_reads_back_what_it_writes() {
        let commands = [
            Command::Status,
            Command::Pause,
            Command::Resume,
            Command::Step { n: 7 },
            Command::Stop,
            Command::Reload,
            Command::Save,
            Command::State,
            Command::Versions,
            Command::Get {
                path: "enemies[2].hp".into(),
            },
            Command::Set {
                path: "pos.x".into(),
                value: "1.5".into(),
            },
            Command::Undo,
            Command::Rollback { to: Some(2) },
            Command::Rollback { to: None },
            Command::Rewind { n: 200 },
            Command::RewindTo { tick: 3800 },
            Command::Replay {
                from: Some(3800),
                to: Some(4000),
                with: Some(3),
            },
            Command::Replay {
                from: None,
                to: None,
                with: None,
            },
            Command::Loop {
                window: Some((3800, 4000)),
            },
            Command::Loop { window: None },
            Command::Record {
                from: Some(3800),
                to: Some(4000),
                path: "window.hrr".into(),
            },
            Command::Events { from: Some(12) },
            Command::Events { from: None },
            Command::Input {
                bytes: Some(vec![0, 1, 0xfe, b'j']),
            },
            Command::Input { bytes: None },
        ];
        for (id, command) in commands.into_iter().enumerate() {
            let line = command.to_line(id as u64);
            let parsed = parse_request(line.as_bytes()).expect("a request it wrote");
            assert_eq!(
                parsed,
                Request {
                    id: id as u64,
                    command
                }
            );
        }
    }

    #[test]
    fn refusals_say_what_was_expected_and_what_was_found() {
        let cases: &[(&[u8], ErrorCode, Option<u64>, &str)] = &[
            (
                b"not json",
                ErrorCode::BadJson,
                None,
                "expected one JSON object",
            ),
            (b"[1,2]", ErrorCode::BadJson, None, "found an array"),
            (
                b"{\"cmd\":\"status\"}",
                ErrorCode::BadId,
                None,
                "found none",
            ),
            (
                b"{\"id\":-1,\"cmd\":\"status\"}",
                ErrorCode::BadId,
                None,
                "found the number -1",
            ),
            (
                b"{\"id\":3}",
                ErrorCode::UnknownCommand,
                Some(3),
                "found none",
            ),
            (
                b"{\"id\":4,\"cmd\":\"dance\"}",
                ErrorCode::UnknownCommand,
                Some(4),
                "found \"dance\"",
            ),
            (
                b"{\"id\":5,\"cmd\":\"step\",\"n\":0}",
                ErrorCode::BadArgument,
                Some(5),
                "from 1 to 1000000, found the number 0",
            ),
            (
                b"{\"id\":6,\"cmd\":\"step\",\"n\":\"3\"}",
                ErrorCode::BadArgument,
                Some(6),
                "found the string \"3\"",
            ),
            (
                b"{\"id\":7,\"cmd\":\"events\",\"from\":1.5}",
                ErrorCode::BadArgument,
                Some(7),
                "found the number 1.5",
            ),
            (
                b"{\"id\":8,\"cmd\":\"input\",\"hex\":\"6a7\"}",
                ErrorCode::BadArgument,
                Some(8),
                "expected an even number of hex digits, found 3",
            ),
            (
                b"{\"id\":9,\"cmd\":\"input\",\"hex\":\"6azz\"}",
                ErrorCode::BadArgument,
                Some(9),
                "found \"zz\" at byte 2",
            ),
            (
                b"{\"id\":10,\"cmd\":\"input\"}",
                ErrorCode::BadArgument,
                Some(10),
                "expected \"hex\" for input, or \"off\": true",
            ),
            (b"\xff\xfe", ErrorCode::BadJson, None, "invalid UTF-8"),
        ];
        for (line, code, id, says) in cases {
            let refused = parse_request(line).expect_err("refused");
            assert_eq!(refused.code, *code, "{}", String::from_utf8_lossy(line));
            assert_eq!(refused.id, *id, "{}", String::from_utf8_lossy(line));
            assert!(
                refused.message.contains(says),
                "{}: {}",
                String::from_utf8_lossy(line),
                refused.message
            );
            let reply = parse_server_message(&refused.to_line()).expect("a reply");
            assert!(matches!(reply, ServerMessage::Reply { result: Err(_), .. }));
        }
        let long = vec![b' '; MAX_LINE + 1];
        assert_eq!(
            parse_request(&long).expect_err("too long").code,
            ErrorCode::TooLong
        );
    }

    #[test]
    fn random_and_truncated_lines_are_refused_never_a_panic() {
        // A small deterministic generator: the bytes of valid requests cut
        // at every length, with bytes flipped, and noise.
        let mut seed = 0x2026_1201_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = Command::Step { n: 3 }.to_line(9);
        let mut seen = 0;
        for cut in 0..valid.len() {
            let _ = parse_request(&valid.as_bytes()[..cut]);
            seen += 1;
        }
        for _ in 0..10_000 {
            let mut bytes = valid.as_bytes().to_vec();
            let at = (next() as usize) % bytes.len();
            bytes[at] ^= (next() & 0xff) as u8;
            let _ = parse_request(&bytes);
            let noise: Vec<u8> = (0..(next() % 200)).map(|_| (next() & 0xff) as u8).collect();
            let _ = parse_request(&noise);
            seen += 2;
        }
        assert!(seen > 20_000);
    }

    #[test]
    fn the_server_lines_read_back() {
        assert_eq!(
            parse_server_message(&hello_line("hotreload 0.1.0", 42)),
            Ok(ServerMessage::Hello {
                protocol: PROTOCOL_VERSION,
                server: "hotreload 0.1.0".into(),
                pid: 42
            })
        );
        assert_eq!(
            parse_server_message(&event_line(
                3,
                1000,
                "swapped",
                "[reload] swapped",
                &json!({"version": 2})
            )),
            Ok(ServerMessage::Event {
                seq: 3,
                time_ms: 1000,
                kind: "swapped".into(),
                text: "[reload] swapped".into(),
                fields: json!({"version": 2}),
            })
        );
        match parse_server_message(&reply_ok(5, json!({"tick": 9}))) {
            Ok(ServerMessage::Reply {
                id: Some(5),
                result: Ok(v),
            }) => assert_eq!(v["tick"], 9),
            other => panic!("{other:?}"),
        }
    }
}
