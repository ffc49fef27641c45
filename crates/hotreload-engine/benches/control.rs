//! The control socket's costs, against baselines measured in the same run:
//! - a `status` round trip (request written → reply read) on a live
//!   engine's socket, beside a bare Unix-socket echo of a line of the same
//!   size (a thread that reads a line and writes it back), interleaved;
//!   target p99 < 1 ms;
//! - `pause` → the tick loop holds: from the request written to the
//!   `paused` event's stamp, against the tick period; target: within one
//!   tick;
//! - `set` → the first tick that sees the value: from the request written
//!   to the state line of the first tick that ran on it (the plugin counts
//!   its ticks in the field set, so the line shows that it started from the
//!   value), against the tick period; target: within one tick;
//! - tick lateness at a 1 ms period with 4 followers reading every event
//!   (a state line each tick), against none, interleaved rounds: no
//!   measurable difference.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hotreload_engine::control::hub::Hub;
use hotreload_engine::control::server::{self, Wiring};
use hotreload_engine::{Config, Engine, Event, StopReason};

use common::{Summary, Workdir, header, ms, verdict};

const REQUESTS: usize = 2_000;
const ROUNDS: usize = 5;
const PAUSES: usize = 40;
const SETS: usize = 40;
/// What `set` writes into the plugin's tick counter: far above any count
/// the bench reaches by ticking.
const SET_BASE: u64 = 1_000_000_000;
const LATENESS_ROUNDS: usize = 3;
const LATENESS_RUN: Duration = Duration::from_secs(2);

struct Running {
    engine: hotreload_engine::EngineHandle,
    _control: server::ControlServer,
    socket: std::path::PathBuf,
    hub: Arc<Hub>,
    /// When each `paused` event was emitted.
    paused_at: Arc<std::sync::Mutex<Vec<Instant>>>,
    /// When each state line was emitted, with the tick counter the plugin
    /// keeps in its state's first 8 bytes.
    states: Arc<std::sync::Mutex<Vec<(Instant, u64)>>>,
}

fn start(
    work: &Workdir,
    lib: &Path,
    tag: &str,
    tick: Duration,
    state_every: Option<u64>,
) -> Running {
    let watched_dir = work.path().join(format!("watched-{tag}"));
    std::fs::create_dir(&watched_dir).expect("create the watched folder");
    let watched = watched_dir.join("never-changes.c");
    std::fs::write(&watched, "/* never changes */\n").expect("write");
    let out = work.path().join(format!("logic-{tag}.so"));
    let mut config = Config::new(
        vec![watched],
        format!("cp {} {}", lib.display(), out.display()),
        out,
    );
    config.build_dir = work.path().to_path_buf();
    config.tick_period = tick;
    config.probe = false;
    config.state_every = state_every;
    let hub = Arc::new(Hub::new());
    let paused_at = Arc::new(std::sync::Mutex::new(Vec::new()));
    let states = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (published, paused, seen) = (
        Arc::clone(&hub),
        Arc::clone(&paused_at),
        Arc::clone(&states),
    );
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let engine = Engine::start(config, move |event: Event| {
        if matches!(event, Event::Paused { .. })
            && let Ok(mut p) = paused.lock()
        {
            p.push(Instant::now());
        }
        if let Event::State(report) = &event
            && let Some(head) = report.head.get(..8).and_then(|h| h.try_into().ok())
            && let Ok(mut seen) = seen.lock()
        {
            seen.push((Instant::now(), u64::from_ne_bytes(head)));
        }
        if matches!(event, Event::FirstTick { .. }) {
            let _ = ready_tx.send(());
        }
        // As the command-line server does: every event, with its text
        // (here its debug form, of a similar length).
        published.publish(event.kind(), &format!("{event:?}"), &event.fields());
    })
    .expect("start the engine");
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the first tick");
    let socket = work.path().join(format!("ctl-{tag}")).join("s.sock");
    std::fs::create_dir_all(socket.parent().expect("folder")).expect("mkdir");
    std::fs::set_permissions(
        socket.parent().expect("folder"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    let control = server::bind(&socket)
        .unwrap_or_else(|_| panic!("bind {}", socket.display()))
        .serve(Wiring {
            commander: engine.commander(),
            door: engine.state_door(),
            board: engine.status(),
            hub: Arc::clone(&hub),
            say: Arc::new(|_| {}),
        })
        .unwrap_or_else(|_| panic!("serve"));
    Running {
        engine,
        _control: control,
        socket,
        hub,
        paused_at,
        states,
    }
}

fn stop(r: Running) {
    r.engine.stop(StopReason::Requested);
    assert_eq!(r.engine.join(), 0);
}

fn connect(socket: &Path) -> (UnixStream, BufReader<UnixStream>) {
    let stream = UnixStream::connect(socket).expect("connect");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut hello = String::new();
    reader.read_line(&mut hello).expect("hello");
    (stream, reader)
}

fn round_trips(
    stream: &mut UnixStream,
    reader: &mut BufReader<UnixStream>,
    line: &[u8],
    n: usize,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    let mut reply = String::new();
    for _ in 0..n {
        let t = Instant::now();
        stream.write_all(line).expect("send");
        reply.clear();
        reader.read_line(&mut reply).expect("reply");
        out.push(t.elapsed());
    }
    out
}

/// A bare echo: a thread that reads a line and writes it back.
fn echo_server(path: &Path) {
    let listener = UnixListener::bind(path).expect("bind the echo");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut out = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if out.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
}

fn main() {
    hotreload_engine::run_probe_if_requested();
    header(
        "control",
        "the control socket: status round trip, pause and set to effect, tick lateness with followers",
    );
    let work = Workdir::new();
    let lib = work.compile_plugin("logic", 0);

    // 1. status round trips, against a bare echo of a line of the same size.
    let r = start(&work, &lib, "status", Duration::from_millis(1), None);
    let echo = work.path().join("echo.sock");
    echo_server(&echo);
    let status = b"{\"id\":1,\"cmd\":\"status\"}\n";
    let (mut ctl, mut ctl_reader) = connect(&r.socket);
    let probe_reply = {
        let mut reply = String::new();
        ctl.write_all(status).expect("send");
        ctl_reader.read_line(&mut reply).expect("reply");
        reply
    };
    let echo_line = format!("{}\n", "x".repeat(probe_reply.len().saturating_sub(1)));
    let mut echo_stream = UnixStream::connect(&echo).expect("connect the echo");
    let mut echo_reader = BufReader::new(echo_stream.try_clone().expect("clone"));
    let (mut via_status, mut via_echo) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            via_status.extend(round_trips(&mut ctl, &mut ctl_reader, status, REQUESTS));
            via_echo.extend(round_trips(
                &mut echo_stream,
                &mut echo_reader,
                echo_line.as_bytes(),
                REQUESTS,
            ));
        } else {
            via_echo.extend(round_trips(
                &mut echo_stream,
                &mut echo_reader,
                echo_line.as_bytes(),
                REQUESTS,
            ));
            via_status.extend(round_trips(&mut ctl, &mut ctl_reader, status, REQUESTS));
        }
    }
    let (s, e) = (Summary::new(via_status), Summary::new(via_echo));
    println!(
        "method: {ROUNDS} interleaved rounds of {REQUESTS} requests on one connection each; tick period 1 ms while they run"
    );
    println!(
        "status round trip                 p50 {}  p99 {}  (max {}, n={})",
        ms(s.p50()),
        ms(s.pct(99.0)),
        ms(s.max()),
        s.len()
    );
    println!(
        "baseline: bare Unix-socket echo   p50 {}  p99 {}  (max {}, n={}; a {}-byte line)",
        ms(e.p50()),
        ms(e.pct(99.0)),
        ms(e.max()),
        e.len(),
        echo_line.len()
    );
    println!(
        "target: status p99 < 1 ms -> {}",
        verdict(s.pct(99.0) < Duration::from_millis(1))
    );

    // 2. pause -> held, at a 10 ms tick.
    stop(r);
    let period = Duration::from_millis(10);
    let r = start(&work, &lib, "pause", period, None);
    let (mut ctl, mut ctl_reader) = connect(&r.socket);
    let mut to_effect = Vec::with_capacity(PAUSES);
    let mut reply = String::new();
    for i in 0..PAUSES {
        let before = r.paused_at.lock().map_or(0, |p| p.len());
        let t = Instant::now();
        ctl.write_all(format!("{{\"id\":{i},\"cmd\":\"pause\"}}\n").as_bytes())
            .expect("send");
        reply.clear();
        ctl_reader.read_line(&mut reply).expect("reply");
        let deadline = Instant::now() + Duration::from_secs(5);
        let at = loop {
            if let Some(at) = r.paused_at.lock().ok().and_then(|p| p.get(before).copied()) {
                break at;
            }
            assert!(Instant::now() < deadline, "no paused event");
            std::thread::sleep(Duration::from_micros(200));
        };
        to_effect.push(at.saturating_duration_since(t));
        ctl.write_all(format!("{{\"id\":{i},\"cmd\":\"resume\"}}\n").as_bytes())
            .expect("send");
        reply.clear();
        ctl_reader.read_line(&mut reply).expect("reply");
        std::thread::sleep(period * 3);
    }
    let p = Summary::new(to_effect);
    println!(
        "pause -> held (paused event)     p50 {}  p99 {}  (max {}, n={}); tick period {}",
        ms(p.p50()),
        ms(p.pct(99.0)),
        ms(p.max()),
        p.len(),
        ms(period)
    );
    println!(
        "target: within one tick -> {}",
        verdict(p.pct(99.0) <= period)
    );
    stop(r);

    // 2b. set -> the first tick that runs on the value, at a 10 ms tick
    //     with a state line after every tick.
    let r = start(&work, &lib, "set", period, Some(1));
    let (mut ctl, mut ctl_reader) = connect(&r.socket);
    let mut to_seen = Vec::with_capacity(SETS);
    for i in 0..SETS {
        let value = SET_BASE * (i as u64 + 1);
        let t = Instant::now();
        ctl.write_all(
            format!("{{\"id\":{i},\"cmd\":\"set\",\"path\":\"@0:u64\",\"value\":\"{value}\"}}\n")
                .as_bytes(),
        )
        .expect("send");
        reply.clear();
        ctl_reader.read_line(&mut reply).expect("reply");
        assert!(reply.contains("\"ok\":true"), "set refused: {reply}");
        let deadline = Instant::now() + Duration::from_secs(5);
        let at = loop {
            let found = r.states.lock().ok().and_then(|s| {
                s.iter()
                    .find(|(at, ticks)| *at >= t && *ticks > value && *ticks < value + SET_BASE)
                    .map(|(at, _)| *at)
            });
            if let Some(at) = found {
                break at;
            }
            assert!(Instant::now() < deadline, "no tick ran on the value set");
            std::thread::sleep(Duration::from_micros(200));
        };
        to_seen.push(at.saturating_duration_since(t));
        // Land the next request at another point of the period.
        std::thread::sleep(period + period * (i as u32 % 7) / 7);
    }
    let v = Summary::new(to_seen);
    println!(
        "set -> first tick on the value   p50 {}  p99 {}  (max {}, n={}); tick period {}",
        ms(v.p50()),
        ms(v.pct(99.0)),
        ms(v.max()),
        v.len(),
        ms(period)
    );
    println!(
        "target: within one tick -> {}",
        verdict(v.pct(99.0) <= period)
    );
    stop(r);

    // 3. tick lateness at 1 ms with a state line every tick, with 4
    //    followers reading every event, against none.
    let mut with = Vec::new();
    let mut without = Vec::new();
    for round in 0..LATENESS_ROUNDS {
        for followers in if round % 2 == 0 { [0, 4] } else { [4, 0] } {
            let tag = format!("late-{round}-{followers}");
            let r = start(&work, &lib, &tag, Duration::from_millis(1), Some(1));
            let mut readers = Vec::new();
            for _ in 0..followers {
                let (mut s, reader) = connect(&r.socket);
                s.write_all(b"{\"id\":1,\"cmd\":\"events\"}\n")
                    .expect("send");
                readers.push(std::thread::spawn(move || {
                    let mut n = 0u64;
                    for line in reader.lines() {
                        if line.is_err() {
                            break;
                        }
                        n += 1;
                    }
                    drop(s);
                    n
                }));
            }
            let board = r.engine.status();
            let start_tick = board.snapshot().tick;
            std::thread::sleep(LATENESS_RUN);
            let status = board.snapshot();
            let ticks = status.tick - start_tick;
            let late = Duration::from_micros(status.latest_late_us);
            let _ = r.hub.next_seq();
            stop(r);
            let read: u64 = readers.into_iter().map(|h| h.join().unwrap_or(0)).sum();
            if followers == 0 {
                without.push((late, ticks));
            } else {
                with.push((late, ticks));
                assert!(read > 0, "the followers read events");
            }
        }
    }
    let show = |v: &[(Duration, u64)]| {
        v.iter()
            .map(|(l, t)| format!("{} ({t} ticks)", ms(*l)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "tick lateness at 1 ms, state line every tick, {LATENESS_ROUNDS} interleaved rounds of {} s: latest start after its deadline",
        LATENESS_RUN.as_secs()
    );
    println!("  with 4 followers reading every event: {}", show(&with));
    println!("  baseline, no follower:                {}", show(&without));
    let med = |v: &[(Duration, u64)]| {
        let mut l: Vec<Duration> = v.iter().map(|(l, _)| *l).collect();
        l.sort();
        l[l.len() / 2]
    };
    println!(
        "median: {} with followers, {} without",
        ms(med(&with)),
        ms(med(&without))
    );
}
