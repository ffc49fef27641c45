//! `hotreload ctl COMMAND`: drives a running server through its control
//! socket (the one of the server started in this folder, unless `--control
//! PATH` names another). One request, one reply, printed; `events` follows
//! the server's events until it stops.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hotreload_control::{
    Command, ErrorCode, PROTOCOL_VERSION, ServerMessage, parse_server_message,
};
use serde_json::Value;

/// Exit codes of `hotreload ctl`.
mod code {
    pub const OK: u8 = 0;
    /// `replay`: the result differs from the recorded run (or faulted).
    pub const DIFFERS: u8 = 1;
    pub const USAGE: u8 = 2;
    /// No server answers on the socket.
    pub const NO_SERVER: u8 = 3;
    /// The server does not speak this protocol, or said something else.
    pub const PROTOCOL: u8 = 4;
    /// Refused: the server is not paused (`step`).
    pub const NOT_PAUSED: u8 = 5;
    /// Refused: nothing to do it to (`save` without a state file).
    pub const UNAVAILABLE: u8 = 6;
    /// Refused: the server is stopping.
    pub const STOPPING: u8 = 7;
    /// Refused for another reason (a malformed request).
    pub const REFUSED: u8 = 8;
    /// `wait`: the event did not come within `--timeout`.
    pub const TIMED_OUT: u8 = 9;
}

#[derive(Parser, Debug)]
#[command(
    name = "hotreload ctl",
    about = "Drive a running hotreload server through its control socket",
    after_help = "Exit codes: 0 done; 1 replay: the result differs from the recorded run; 2 bad usage; 3 no server answers on the socket; \
                  4 the server speaks another protocol; 5 refused: not paused (step); \
                  6 refused: unavailable (save without --state-file, no version yet, the tick thread busy); \
                  7 refused: the server is stopping; 8 refused for another reason; \
                  9 wait: the event did not come in time (or the server stopped first)."
)]
struct CtlArgs {
    /// The socket of the server to drive; by default the one of the server
    /// started in this folder.
    #[arg(long, value_name = "PATH", global = true)]
    control: Option<PathBuf>,

    /// Print the server's replies (and events) as JSON lines.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// The running version, the tick, paused or not, the last reload, the
    /// watch mode, the uptime, the tick lateness.
    Status,
    /// Hold ticking at the next tick boundary.
    Pause,
    /// Tick again; deadlines start from now (no burst of missed ticks).
    Resume,
    /// While paused, run exactly N ticks (default 1), then hold again;
    /// returns once they have run.
    Step {
        #[arg(default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=hotreload_control::MAX_STEP))]
        n: u64,
    },
    /// Stop the server as SIGTERM does (shutdown, then the final save).
    Stop,
    /// Build and reload now, even if no file changed.
    Reload,
    /// Write the state file now.
    Save,
    /// Show the state (its fields, as the server prints them), read
    /// between two ticks; with `--json`, every field's value too, by path
    /// (`values`; null without a known layout).
    State,
    /// Every build the server tried to load: version, content hash, when
    /// (seconds after the server started; `--json` has the wall-clock time
    /// too), how long the build ran, whether it is still loaded, only on
    /// disk or gone, a digest of the sources it was built from, and what
    /// became of it (live, good, rejected and why, faulted and why).
    Versions,
    /// One value of the state: `hp`, `pos.x`, `enemies[2].hp`,
    /// `grid[1][2]`, or `@12:i32` (by byte offset and type, for plugins
    /// without a layout).
    Get { path: String },
    /// Write one value between two ticks, checked against the layout (the
    /// name, the type, the range, array bounds); said as an event.
    Set {
        path: String,
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Take the latest set back.
    Undo,
    /// Go back to an earlier good version (`v1` or `1`; default: the one
    /// before the running version): one still loaded at once, one kept on
    /// disk loaded again first; the state carried as a fault's rollback
    /// carries it, or the rollback refused, saying why.
    Rollback {
        #[arg(value_parser = parse_version)]
        version: Option<u64>,
    },
    /// While paused, put the state and the tick counter back N ticks
    /// (default 1) from the rewind history.
    Rewind {
        #[arg(default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        n: u64,
    },
    /// While paused, put the state back to tick TICK from the history.
    #[command(name = "rewind-to")]
    RewindTo { tick: u64 },
    /// Run the recorded ticks FROM..TO (default: all the history holds)
    /// again with a version (default: the running one) in a throwaway
    /// process, and say at which tick and in which field the result first
    /// differs from the recorded run. Exits 1 when it differs, as diff does.
    Replay {
        from: Option<u64>,
        to: Option<u64>,
        /// The version to run them with (`v3` or `3`).
        #[arg(long, value_parser = parse_version, value_name = "VERSION")]
        with: Option<u64>,
    },
    /// Tick the window FROM..TO over and over: at TO the state goes back to
    /// FROM, and each pass runs whatever version is live by then. `loop
    /// off` stops.
    Loop {
        /// FROM TO, or `off`.
        #[arg(num_args = 1..=2, required = true)]
        window: Vec<String>,
    },
    /// Write the recorded ticks FROM..TO (default: all the history holds)
    /// to FILE, which `hotreload --replay FILE --lib LIB` runs again with
    /// any build, here or on another machine.
    Record {
        /// FROM TO FILE, or FILE alone.
        #[arg(num_args = 1..=3, required = true)]
        args: Vec<String>,
    },
    /// Pass TEXT's bytes (or `--hex` HEX's, or none with `--off`) to every
    /// tick from the next on, until set again: the plugin reads them in the
    /// host context of its extended `tick`, and the history records them,
    /// so replay and loop pass each tick what it got. At most 2048 bytes.
    Input {
        /// The bytes, as text.
        #[arg(allow_hyphen_values = true, required_unless_present_any = ["hex", "off"], conflicts_with_all = ["hex", "off"])]
        text: Option<String>,
        /// The bytes, as hex digits (`6a756d70`).
        #[arg(long, value_name = "HEX", conflicts_with = "off")]
        hex: Option<String>,
        /// No input from the next tick on.
        #[arg(long)]
        off: bool,
    },
    /// Wait for the next event of a kind (`swapped`, `fault`, `rejected`,
    /// `paused`, `stepped`, …; see docs/protocol.md), print it, and exit.
    Wait {
        kind: String,
        /// Give up after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
    },
    /// Follow the server's events until it stops.
    Events {
        /// Start from this event number (what the server still keeps of
        /// them), not from the next one.
        #[arg(long, value_name = "SEQ")]
        from: Option<u64>,
    },
}

pub fn main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let args =
        match CtlArgs::try_parse_from(std::iter::once(OsString::from("hotreload ctl")).chain(args))
        {
            Ok(a) => a,
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(if e.use_stderr() {
                    code::USAGE
                } else {
                    code::OK
                });
            }
        };
    let path = args.control.clone().unwrap_or_else(|| {
        hotreload_control::socket_path(&std::env::current_dir().unwrap_or_default())
    });
    if let CtlCommand::Wait { kind, timeout } = &args.command {
        if !hotreload_engine::event::KINDS.contains(&kind.as_str()) {
            eprintln!(
                "hotreload ctl: expected an event kind ({}), found {kind:?}",
                hotreload_engine::event::KINDS.join(", ")
            );
            return ExitCode::from(code::USAGE);
        }
        return ExitCode::from(wait(&path, kind, *timeout, args.json));
    }
    let command = match args.command {
        CtlCommand::Status => Command::Status,
        CtlCommand::Pause => Command::Pause,
        CtlCommand::Resume => Command::Resume,
        CtlCommand::Step { n } => Command::Step { n },
        CtlCommand::Stop => Command::Stop,
        CtlCommand::Reload => Command::Reload,
        CtlCommand::Save => Command::Save,
        CtlCommand::State => Command::State,
        CtlCommand::Versions => Command::Versions,
        CtlCommand::Get { path } => Command::Get { path },
        CtlCommand::Set { path, value } => Command::Set { path, value },
        CtlCommand::Undo => Command::Undo,
        CtlCommand::Rollback { version } => Command::Rollback { to: version },
        CtlCommand::Rewind { n } => Command::Rewind { n },
        CtlCommand::RewindTo { tick } => Command::RewindTo { tick },
        CtlCommand::Replay { from, to, with } => {
            if from.is_some() != to.is_some() {
                eprintln!("hotreload ctl: expected replay FROM TO (both) or neither, found one");
                return ExitCode::from(code::USAGE);
            }
            Command::Replay { from, to, with }
        }
        CtlCommand::Input { text, hex, off } => {
            let bytes = match (text, hex, off) {
                (_, _, true) => None,
                (Some(text), _, _) => Some(text.into_bytes()),
                (None, Some(hex), _) => match hotreload_control::unhex(&hex) {
                    Ok(bytes) => Some(bytes),
                    Err(why) => {
                        eprintln!("hotreload ctl: input --hex: {why}");
                        return ExitCode::from(code::USAGE);
                    }
                },
                (None, None, false) => None,
            };
            if let Some(bytes) = bytes
                .as_ref()
                .filter(|b| b.len() > hotreload_control::MAX_INPUT)
            {
                eprintln!(
                    "hotreload ctl: expected an input of at most {} bytes, found {}",
                    hotreload_control::MAX_INPUT,
                    bytes.len()
                );
                return ExitCode::from(code::USAGE);
            }
            Command::Input { bytes }
        }
        CtlCommand::Loop { window } => match window.as_slice() {
            [off] if off == "off" => Command::Loop { window: None },
            [from, to] => match (from.parse::<u64>(), to.parse::<u64>()) {
                (Ok(from), Ok(to)) => Command::Loop {
                    window: Some((from, to)),
                },
                _ => {
                    eprintln!(
                        "hotreload ctl: expected loop FROM TO (tick numbers), found {from} {to}"
                    );
                    return ExitCode::from(code::USAGE);
                }
            },
            other => {
                eprintln!(
                    "hotreload ctl: expected loop FROM TO or loop off, found {}",
                    other.join(" ")
                );
                return ExitCode::from(code::USAGE);
            }
        },
        CtlCommand::Record { args } => {
            let file = |f: &str| {
                // The server writes it: a path relative to this folder is
                // made absolute here, as the server's may differ.
                std::env::current_dir()
                    .map(|d| d.join(f))
                    .unwrap_or_else(|_| PathBuf::from(f))
                    .to_string_lossy()
                    .into_owned()
            };
            match args.as_slice() {
                [path] => Command::Record {
                    from: None,
                    to: None,
                    path: file(path),
                },
                [from, to, path] => match (from.parse::<u64>(), to.parse::<u64>()) {
                    (Ok(from), Ok(to)) => Command::Record {
                        from: Some(from),
                        to: Some(to),
                        path: file(path),
                    },
                    _ => {
                        eprintln!(
                            "hotreload ctl: expected record FROM TO FILE (tick numbers), found {from} {to}"
                        );
                        return ExitCode::from(code::USAGE);
                    }
                },
                other => {
                    eprintln!(
                        "hotreload ctl: expected record FROM TO FILE or record FILE, found {}",
                        other.join(" ")
                    );
                    return ExitCode::from(code::USAGE);
                }
            }
        }
        CtlCommand::Events { from } => Command::Events { from },
        CtlCommand::Wait { .. } => unreachable!("handled above"),
    };
    ExitCode::from(run(&path, &command, args.json))
}

/// Follows the events from the next one until one of `kind` comes.
fn wait(path: &PathBuf, kind: &str, timeout: Option<f64>, json: bool) -> u8 {
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                code::NO_SERVER,
                &format!("no hotreload server answers on {} ({e})", path.display()),
            );
        }
    };
    let deadline = timeout
        .filter(|t| t.is_finite() && *t >= 0.0)
        .map(|t| std::time::Instant::now() + std::time::Duration::from_secs_f64(t));
    let Ok(mut out) = stream.try_clone() else {
        return fail(code::NO_SERVER, "cannot use the socket");
    };
    if out
        .write_all(Command::Events { from: None }.to_line(1).as_bytes())
        .is_err()
    {
        return fail(code::NO_SERVER, "the server closed the socket");
    }
    let mut reader = BufReader::new(stream);
    loop {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return fail(code::TIMED_OUT, &format!("no {kind} event came in time"));
            }
            let _ = reader.get_ref().set_read_timeout(Some(left));
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => {
                return fail(
                    code::TIMED_OUT,
                    &format!("the server stopped before a {kind} event"),
                );
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return fail(code::TIMED_OUT, &format!("no {kind} event came in time"));
            }
            Err(e) => {
                return fail(
                    code::NO_SERVER,
                    &format!("cannot read from the server: {e}"),
                );
            }
        }
        match parse_server_message(&line) {
            Ok(ServerMessage::Event {
                kind: k, text, seq, ..
            }) if k == kind => {
                // An event the server prints no line for is named instead.
                let _ = if json {
                    write!(std::io::stdout(), "{line}")
                } else if text.is_empty() {
                    writeln!(std::io::stdout(), "{kind} (event {seq})")
                } else {
                    writeln!(std::io::stdout(), "{text}")
                };
                return code::OK;
            }
            Ok(ServerMessage::Reply {
                result: Err((code_name, message)),
                ..
            }) => {
                return refused(&code_name, &message);
            }
            Ok(_) => {}
            Err(why) => return fail(code::PROTOCOL, &why),
        }
    }
}

fn fail(code: u8, why: &str) -> u8 {
    eprintln!("hotreload ctl: {why}");
    code
}

fn run(path: &PathBuf, command: &Command, json: bool) -> u8 {
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                code::NO_SERVER,
                &format!(
                    "no hotreload server answers on {} ({e}); start one in this folder, or name its socket with --control PATH",
                    path.display()
                ),
            );
        }
    };
    let Ok(mut out) = stream.try_clone() else {
        return fail(code::NO_SERVER, "cannot use the socket");
    };
    let mut lines = BufReader::new(stream).lines();
    match lines.next().map(|l| l.map(|l| parse_server_message(&l))) {
        Some(Ok(Ok(ServerMessage::Hello { protocol, .. }))) if protocol == PROTOCOL_VERSION => {}
        Some(Ok(Ok(ServerMessage::Hello {
            protocol, server, ..
        }))) => {
            return fail(
                code::PROTOCOL,
                &format!(
                    "expected a server of control protocol {PROTOCOL_VERSION}, found {server} speaking protocol {protocol}"
                ),
            );
        }
        Some(Ok(Ok(ServerMessage::Reply {
            result: Err((code_name, message)),
            ..
        }))) => {
            // Refused before the hello (too many clients).
            return refused(&code_name, &message);
        }
        other => {
            return fail(
                code::PROTOCOL,
                &format!("expected the server's hello, found {other:?}"),
            );
        }
    }
    if out.write_all(command.to_line(1).as_bytes()).is_err() {
        return fail(code::NO_SERVER, "the server closed the socket");
    }
    let mut replied = false;
    let mut stdout = std::io::stdout();
    for line in lines {
        let Ok(line) = line else { break };
        // A reader that went away (`| head`) ends the following quietly.
        if json && writeln!(stdout, "{line}").is_err() {
            return code::OK;
        }
        match parse_server_message(&line) {
            Ok(ServerMessage::Reply {
                result: Ok(value), ..
            }) if !replied => {
                replied = true;
                if !json {
                    say(command, &value);
                }
                if matches!(command, Command::Replay { .. })
                    && value.pointer("/outcome/kind").and_then(Value::as_str) != Some("same")
                {
                    return code::DIFFERS;
                }
                if !matches!(command, Command::Events { .. }) {
                    return code::OK;
                }
            }
            Ok(ServerMessage::Reply {
                result: Err((code_name, message)),
                ..
            }) => {
                if json {
                    return code_for(&code_name);
                }
                return refused(&code_name, &message);
            }
            Ok(ServerMessage::Event { text, .. }) => {
                if !json && !text.is_empty() && writeln!(stdout, "{text}").is_err() {
                    return code::OK;
                }
            }
            Ok(_) => {}
            Err(why) => return fail(code::PROTOCOL, &why),
        }
    }
    if matches!(command, Command::Events { .. }) && replied {
        // The server stopped: the stream ended with it.
        return code::OK;
    }
    fail(
        code::NO_SERVER,
        "the server closed the socket before it replied",
    )
}

fn code_for(name: &str) -> u8 {
    match ErrorCode::from_name(name) {
        Some(ErrorCode::NotPaused) => code::NOT_PAUSED,
        Some(ErrorCode::Unavailable) => code::UNAVAILABLE,
        Some(ErrorCode::Stopping) => code::STOPPING,
        _ => code::REFUSED,
    }
}

fn refused(name: &str, message: &str) -> u8 {
    fail(code_for(name), &format!("refused ({name}): {message}"))
}

/// The reply, as a person reads it.
/// What `status` says of the history: the ticks it holds, the memory they
/// take against the bound, and where a rewind left the state.
fn history_line(history: &Value) -> String {
    let n = |k: &str| history.get(k).and_then(Value::as_u64);
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    let held = match (n("oldest"), n("newest")) {
        (Some(oldest), Some(newest)) if oldest < newest => format!("ticks {oldest}..{newest}"),
        _ => "no ticks yet".to_owned(),
    };
    let mut line = format!(
        "history: {held} ({} of at most {} ticks, {:.1} MiB of {:.0} MiB{})",
        n("ticks").unwrap_or(0),
        n("bound_ticks").unwrap_or(0),
        mib(n("bytes").unwrap_or(0)),
        mib(n("bound_bytes").unwrap_or(0)),
        if history.get("cut_by_bytes").and_then(Value::as_bool) == Some(true) {
            "; the memory bound cuts it short"
        } else {
            ""
        }
    );
    if let (Some(at), Some(newest)) = (n("rewound_to"), n("newest")) {
        line.push_str(&format!(
            "; rewound to tick {at}: ticks {at}..{newest} are kept for replay, loop, record \
             and rewind-to until the state changes"
        ));
    }
    line
}

/// One line of the reply on stdout. A reader that went away (`ctl status
/// | head -1`) ends the reply quietly, as `events` does, rather than with a
/// panic about a broken pipe; the command's exit code is unchanged.
macro_rules! reply_line {
    ($($arg:tt)*) => {
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            return;
        }
    };
}

fn say(command: &Command, value: &Value) {
    let n = |k: &str| value.get(k).and_then(Value::as_u64).unwrap_or(0);
    let was_paused = value.get("was_paused").and_then(Value::as_bool) == Some(true);
    match command {
        Command::Status => {
            let version = value
                .get("version")
                .and_then(Value::as_u64)
                .map_or("no version running".to_owned(), |v| format!("v{v} running"));
            let flag = |k: &str| value.get(k).and_then(Value::as_bool) == Some(true);
            let steps_left = n("steps_left");
            let paused = if flag("stopping") {
                "stopping".to_owned()
            } else if value.get("version").is_none_or(Value::is_null) {
                "ticking paused until a good build or a rollback".to_owned()
            } else if steps_left > 0 {
                format!("stepping ({steps_left} ticks left)")
            } else if flag("paused") {
                "paused".to_owned()
            } else {
                "ticking".to_owned()
            };
            let text = |k: &str| {
                value
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            reply_line!("{version}, {paused}, tick {}", n("tick"));
            reply_line!("last reload: {}", text("last_reload"));
            reply_line!(
                "watching with {}; up {:.1} s; latest tick start {:.2} ms after its deadline at most",
                text("watch_mode"),
                n("uptime_ms") as f64 / 1000.0,
                n("max_late_us") as f64 / 1000.0
            );
            if let Some(history) = value.get("history").filter(|h| !h.is_null()) {
                reply_line!("{}", history_line(history));
            }
        }
        Command::Pause if was_paused => reply_line!("already paused (at tick {})", n("tick")),
        Command::Pause if value.get("paused").and_then(Value::as_bool) == Some(false) => {
            reply_line!(
                "pausing at the next tick boundary (at tick {}; the tick in progress has \
                 not ended within 0.25 s)",
                n("tick")
            )
        }
        Command::Pause => reply_line!("paused at tick {}", n("tick")),
        Command::Resume if !was_paused => {
            reply_line!("already ticking (at tick {}); nothing to resume", n("tick"))
        }
        Command::Resume => reply_line!("resuming (was at tick {})", n("tick")),
        Command::Step { n: ticks } => reply_line!(
            "stepped {ticks} tick(s): from tick {} to tick {}; paused",
            n("from_tick"),
            n("tick")
        ),
        Command::Stop => reply_line!("stopping"),
        Command::Reload => reply_line!("rebuilding now"),
        Command::Save => reply_line!("saving the state file"),
        Command::Get { .. } => reply_line!(
            "{} = {}",
            value.get("path").and_then(Value::as_str).unwrap_or(""),
            value.get("value").and_then(Value::as_str).unwrap_or("")
        ),
        Command::Set { .. } | Command::Undo => reply_line!(
            "{}{}: {} -> {} (after tick {})",
            if matches!(command, Command::Undo) {
                "undid the set of "
            } else {
                ""
            },
            value.get("path").and_then(Value::as_str).unwrap_or(""),
            value.get("old").and_then(Value::as_str).unwrap_or(""),
            value.get("value").and_then(Value::as_str).unwrap_or(""),
            n("tick")
        ),
        Command::Rollback { .. } => reply_line!(
            "rolled back from v{} to v{}{} after tick {}{}",
            n("from"),
            n("to"),
            if value.get("reloaded").and_then(Value::as_bool) == Some(true) {
                " (loaded again from its kept copy)"
            } else {
                ""
            },
            n("tick"),
            value
                .get("carried")
                .and_then(Value::as_str)
                .map_or(String::new(), |c| format!("; state carried: {c}"))
        ),
        Command::Rewind { .. } | Command::RewindTo { .. } => reply_line!(
            "rewound from tick {} to tick {}; paused",
            n("from"),
            n("to")
        ),
        Command::Replay { .. } => reply_line!(
            "{}",
            value.get("text").and_then(Value::as_str).unwrap_or("")
        ),
        Command::Record { .. } => reply_line!(
            "recorded ticks {}..{} to {} ({} bytes); run it again with: hotreload --replay FILE --lib LIB",
            n("from"),
            n("to"),
            value.get("path").and_then(Value::as_str).unwrap_or(""),
            n("bytes")
        ),
        Command::Input { bytes: None } => {
            reply_line!("no input from tick {} on", n("from_tick"))
        }
        Command::Input { bytes: Some(_) } => reply_line!(
            "input of {} bytes passed to every tick from tick {} on",
            n("bytes"),
            n("from_tick")
        ),
        Command::Loop { .. } => match value.get("window").filter(|w| !w.is_null()) {
            Some(w) => reply_line!(
                "looping ticks {}..{} (now at tick {}); `hotreload ctl loop off` stops",
                w.get("from").and_then(Value::as_u64).unwrap_or(0),
                w.get("to").and_then(Value::as_u64).unwrap_or(0),
                n("tick")
            ),
            None => reply_line!("not looping (at tick {})", n("tick")),
        },
        Command::Versions => {
            reply_line!(
                "{:<5} {:<16}  {:>9}  {:>8}  {:<8}  {:<28}  outcome",
                "",
                "content",
                "built at",
                "build",
                "kept",
                "sources"
            );
            for r in value
                .get("versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
                let number = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
                let version = r
                    .get("version")
                    .and_then(Value::as_u64)
                    .map_or("-".to_owned(), |v| format!("v{v}"));
                reply_line!(
                    "{version:<5} {:<16}  {:>9}  {:>6} ms  {:<8}  {:<28}  {}",
                    text("content_hash"),
                    format!("+{:.1} s", number("at_ms") as f64 / 1000.0),
                    number("build_ms"),
                    text("kept"),
                    text("sources"),
                    text("outcome")
                );
            }
        }
        Command::State => match value.get("values").and_then(Value::as_object) {
            // Every field, whole, in layout order (the server's line is the
            // compact one).
            Some(values) => {
                reply_line!(
                    "state of v{} after tick {} ({} bytes), {} fields:",
                    n("version"),
                    n("tick"),
                    n("size"),
                    values.len()
                );
                for (path, v) in values {
                    reply_line!("  {path} = {v}");
                }
            }
            None => reply_line!(
                "{}",
                value.get("text").and_then(Value::as_str).unwrap_or("")
            ),
        },
        Command::Events { .. } => {
            if let Some(note) = value.get("note").and_then(Value::as_str) {
                eprintln!("hotreload ctl: {note}");
            }
        }
    }
}

/// `v3` or `3`.
fn parse_version(text: &str) -> Result<u64, String> {
    text.strip_prefix('v')
        .unwrap_or(text)
        .parse::<u64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| format!("expected a version like v3 or 3, found {text:?}"))
}
