//! `hotreload --replay FILE --lib LIB`: the ticks a recording holds run
//! again with a library, in a throwaway worker process, and one line says
//! where the result first differs from the recorded run.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use hotreload_engine::pipeline::replay::{self, Outcome, Recorded, Request};
use hotreload_engine::state::recording;

/// Exit codes: 0 the same as recorded, 1 it differs or faulted, 2 the
/// recording or the library could not be used.
pub fn main(file: &Path, lib: &Path, timeout_ms: Option<u64>) -> ExitCode {
    let refuse = |why: String| {
        eprintln!("[replay] {why}");
        ExitCode::from(2)
    };
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => return refuse(format!("cannot read {}: {e}", file.display())),
    };
    let recording = match recording::decode(&bytes) {
        Ok(r) => r,
        Err(why) => return refuse(format!("{}: {why}", file.display())),
    };
    let library = match std::fs::canonicalize(lib) {
        Ok(p) => p,
        Err(e) => return refuse(format!("cannot open the library {}: {e}", lib.display())),
    };
    let recorded = Recorded {
        from: recording.window.start_tick,
        to: recording.to,
        window: recording.window,
        state_version: recording.state_version,
        layout: recording.layout.map(std::sync::Arc::new),
    };
    let request = Request {
        from: None,
        to: None,
        version: 0,
        lib_name: library
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        library,
        dt: recording.dt,
        seed: recording.seed,
        call_timeout: Duration::from_millis(timeout_ms.unwrap_or(1000)),
    };
    match replay::run_window(&recorded, &request) {
        Ok(done) => {
            let line = replay::describe(&done);
            // "v0": the library given, not a version of a server.
            println!(
                "[replay] {}",
                line.replacen("v0 ", &format!("{} ", lib.display()), 1)
            );
            if done.outcome == Outcome::Same {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(why) => refuse(why),
    }
}
