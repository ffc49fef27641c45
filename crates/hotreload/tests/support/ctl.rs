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
