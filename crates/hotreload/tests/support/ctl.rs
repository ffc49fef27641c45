//! `hotreload ctl` as the tests run it.

use std::path::Path;
use std::process::Command;

/// `hotreload ctl ARGS` in `dir`: its exit code, stdout and stderr.
pub fn ctl(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(super::binary())
        .arg("ctl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run hotreload ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn status_json(dir: &Path) -> serde_json::Value {
    let (code, stdout, stderr) = ctl(dir, &["status", "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    serde_json::from_str(stdout.trim()).expect("status as JSON")
}

/// `versions --json`: the reply, and its text for messages.
pub fn versions_json(dir: &Path) -> (serde_json::Value, String) {
    let (code, stdout, stderr) = ctl(dir, &["versions", "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    (
        serde_json::from_str(stdout.trim()).expect("versions as JSON"),
        stdout,
    )
}

/// The ticks run so far, as `status` says.
#[allow(dead_code)]
pub fn tick_now(dir: &Path) -> u64 {
    status_json(dir)["result"]["tick"].as_u64().unwrap_or(0)
}

/// Waits until the server has ticked at least `n` times.
#[allow(dead_code)]
pub fn wait_for_tick(dir: &Path, n: u64) {
    let deadline = std::time::Instant::now() + super::WAIT;
    while tick_now(dir) < n {
        assert!(std::time::Instant::now() < deadline, "no tick {n}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Every value of the state, by path, as `state --json` gives them.
#[allow(dead_code)]
pub fn values(dir: &Path) -> serde_json::Value {
    let (code, out, err) = ctl(dir, &["state", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let reply: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    reply["result"]["values"].clone()
}

/// Pauses and waits until the server says it is paused.
#[allow(dead_code)]
pub fn pause(dir: &Path) {
    assert_eq!(ctl(dir, &["pause"]).0, 0);
    let deadline = std::time::Instant::now() + super::WAIT;
    while status_json(dir)["result"]["paused"] != true {
        assert!(std::time::Instant::now() < deadline, "not paused");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
