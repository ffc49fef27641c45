//! A Rust host that embeds the engine and passes its own input to every
//! tick, as a game passes what its window thread read: the history records
//! exactly what each tick got, `replay` runs the ticks again with it and
//! finds no difference, a recording carries it to another run, and a build
//! that reads the input differently is found at the first tick that had
//! some, in the field it changed.
//!
//! Its own `main` (no test harness), because that is what a host is: it
//! calls `run_probe_if_requested` first, so that the engine's trial probes
//! and replay workers, which run copies of this program, work.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hotreload_engine::pipeline::replay::{self, Outcome, Recorded, Request};
use hotreload_engine::state::recording;
use hotreload_engine::{Config, Engine, Event, StopReason};

/// `examples/input`, whose state depends on every byte of every tick's
/// input (times `weight`), on the tick's index and on the seed.
fn source(weight: u32) -> String {
    let example = include_str!("../../../examples/input/logic.c");
    let header = concat!(env!("CARGO_MANIFEST_DIR"), "/../../include/hotreload.h");
    format!(
        "#define WEIGHT {weight}\n{}",
        example.replace(
            "#include \"hotreload.h\"",
            &format!("#include \"{header}\"")
        )
    )
}

/// What the host passes tick `tick`: its index's bytes on every third
/// tick, nothing on the others.
fn input_for(tick: u64) -> Option<Vec<u8>> {
    tick.is_multiple_of(3)
        .then(|| (tick as u32).to_le_bytes().to_vec())
}

fn compile(dir: &Path, weight: u32, out: &str) {
    std::fs::write(dir.join(format!("{out}.c")), source(weight)).expect("write");
    let status = Command::new("cc")
        .args(["-g", "-shared", "-fPIC", "-o", out, &format!("{out}.c")])
        .current_dir(dir)
        .status()
        .expect("cc");
    assert!(status.success(), "cc {out}");
}

fn main() {
    hotreload_engine::run_probe_if_requested();
    a_hosts_input_is_recorded_replayed_and_carried_in_a_recording();
    println!("test a_hosts_input_is_recorded_replayed_and_carried_in_a_recording ... ok");
}

fn a_hosts_input_is_recorded_replayed_and_carried_in_a_recording() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("logic.c"), source(1)).expect("write");
    let mut config = Config::new(
        vec![dir.join("logic.c")],
        "cc -g -shared -fPIC -o logic.so logic.c".into(),
        dir.join("logic.so"),
    );
    config.build_dir = dir.to_path_buf();
    config.tick_period = Duration::from_millis(2);
    config.seed = 11;
    let (events, seen) = mpsc::channel();
    let engine = Engine::start(config, move |event| {
        let _ = events.send(event);
    })
    .expect("the engine starts");
    let door = engine.state_door();
    door.set_input_source(|tick, into| {
        if let Some(bytes) = input_for(tick) {
            into.extend_from_slice(&bytes);
        }
    })
    .expect("a source");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match seen.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Swapped(swap)) if swap.first_load => break,
            Ok(Event::BuildFailed(failure)) => panic!("the build failed: {failure:?}"),
            _ => assert!(Instant::now() < deadline, "no first load"),
        }
    }
    while door.history().and_then(|h| h.newest).unwrap_or(0) < 300 {
        assert!(Instant::now() < deadline, "not 300 ticks recorded");
        std::thread::sleep(Duration::from_millis(5));
    }
    // While it ticks on: every recorded tick again, with its input.
    let replayed = door.replay(None, None, None).expect("a replay");
    assert_eq!(replayed.outcome, Outcome::Same, "{replayed:?}");
    assert!(replayed.ran >= 250, "{replayed:?}");
    let file = dir.join("input.hrr");
    let (from, to, _) = door
        .record(Some(100), Some(250), &file)
        .expect("a recording");
    assert_eq!((from, to), (100, 250));
    engine.stop(StopReason::Requested);
    engine.join();
    // The file holds, for each tick, exactly what the host passed it.
    let recorded = recording::decode(&std::fs::read(&file).expect("read")).expect("decode");
    assert_eq!(recorded.seed, 11);
    let ticked: Vec<_> = recorded.window.steps.iter().filter(|s| s.ticked).collect();
    assert_eq!(ticked.len(), 150);
    for step in ticked {
        assert_eq!(
            step.input.as_deref(),
            input_for(step.tick).as_deref(),
            "the input of tick {}",
            step.tick
        );
    }
    // Replayed from the file: the same library agrees, one that weighs the
    // input twice parts at tick 102 (the first multiple of 3), in `total`.
    compile(dir, 1, "v1.so");
    compile(dir, 2, "v2.so");
    let dt = recorded.dt;
    assert_eq!(dt, 0.002);
    let recorded = Recorded {
        from: recorded.window.start_tick,
        to: recorded.to,
        state_version: recorded.state_version,
        layout: recorded.layout.map(std::sync::Arc::new),
        window: recorded.window,
    };
    let request = |lib: &str| Request {
        from: None,
        to: None,
        version: 0,
        library: dir.join(lib),
        lib_name: lib.to_owned(),
        dt,
        seed: 11,
        call_timeout: Duration::from_secs(1),
    };
    let same = replay::run_window(&recorded, &request("v1.so")).expect("v1 replays");
    assert_eq!(same.outcome, Outcome::Same, "{same:?}");
    let other = replay::run_window(&recorded, &request("v2.so")).expect("v2 replays");
    match &other.outcome {
        Outcome::Differs(d) => {
            assert_eq!(d.tick, 102, "{d:?}");
            assert_eq!(d.path.as_deref(), Some("total"), "{d:?}");
        }
        outcome => panic!("expected a difference at tick 102, found {outcome:?}"),
    }
    // A wrong seed changes `mix` from the first tick on.
    let mut wrong_seed = request("v1.so");
    wrong_seed.seed = 12;
    let parted = replay::run_window(&recorded, &wrong_seed).expect("replays");
    assert!(
        matches!(&parted.outcome, Outcome::Differs(d) if d.tick == 100 && d.path.as_deref() == Some("mix")),
        "{parted:?}"
    );
}
