//! The worker-pool host, reloaded three times while four clients keep
//! sending requests on the loopback: every request answered, none failed,
//! each client sees the versions in order, and the new code answers within
//! milliseconds of the reload.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Builds handler.c answering with `greeting`, into `out` (through a
/// temporary file renamed over it, as a build tool would).
fn build(out: &Path, greeting: &str) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("handler.c");
    let tmp = out.with_extension("tmp");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1"])
        .arg(format!("-DGREETING=\"{greeting}\""))
        .arg("-o")
        .arg(&tmp)
        .arg(&source)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed");
    std::fs::rename(&tmp, out).expect("rename the build");
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    sent: u64,
    answered: u64,
    failed: Vec<String>,
    /// When each version (index 1..) first answered it.
    first: [Option<Instant>; 5],
}

const CLIENTS: usize = 4;
const RELOADS: usize = 3;

#[test]
fn four_clients_keep_being_answered_through_three_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = dir.path().join("libhandler.so");
    build(&lib, "v1");
    let mut host = Command::new(env!("CARGO_BIN_EXE_worker-pool"))
        .arg("--lib")
        .arg(&lib)
        .args(["--threads", "8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the host");
    let mut stdin = host.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(host.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("first line");
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("expected 'listening on ADDR', found {line:?}"))
        .to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    // Each client says when it has been answered by each version
    // (`(client, version)`), once.
    let (progress_tx, progress) = channel::<(usize, usize)>();
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (addr, stop, tx, start) = (
                addr.clone(),
                stop.clone(),
                progress_tx.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                let stream = TcpStream::connect(&addr).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let mut out = stream.try_clone().expect("clone");
                let mut answers = BufReader::new(stream);
                let mut seen = Seen::default();
                let mut newest = 0;
                start.wait();
                let mut reply = String::new();
                while !stop.load(Ordering::Relaxed) {
                    let request = format!("c{c}-{}", seen.sent);
                    out.write_all(format!("{request}\n").as_bytes())
                        .expect("send");
                    seen.sent += 1;
                    reply.clear();
                    answers.read_line(&mut reply).expect("receive");
                    let at = Instant::now();
                    let reply = reply.trim_end();
                    let version = reply
                        .strip_prefix('v')
                        .and_then(|r| r.split_once(' '))
                        .filter(|(_, rest)| *rest == request)
                        .and_then(|(v, _)| v.parse::<usize>().ok());
                    match version {
                        Some(v) if v >= newest && v < seen.first.len() => {
                            seen.answered += 1;
                            if seen.first[v].is_none() {
                                seen.first[v] = Some(at);
                                let _ = tx.send((c, v));
                            }
                            newest = v;
                        }
                        _ => seen
                            .failed
                            .push(format!("{request} answered {reply:?} (after v{newest})")),
                    }
                }
                seen
            })
        })
        .collect();
    drop(progress_tx);
    start.wait();
    let wait_all = |version: usize| {
        let mut got = 0;
        while got < CLIENTS {
            let (_, v) = progress
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("not every client was answered by v{version}"));
            if v == version {
                got += 1;
            }
        }
    };
    wait_all(1);
    let mut reloaded_at = Vec::new();
    for v in 2..=(RELOADS + 1) {
        build(&lib, &format!("v{v}"));
        let asked = Instant::now();
        stdin.write_all(b"reload\n").expect("reload");
        line.clear();
        stdout.read_line(&mut line).expect("reload line");
        assert_eq!(line.trim(), format!("reloaded: v{v}"));
        reloaded_at.push((asked, Instant::now()));
        wait_all(v);
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = (0, 0);
    let mut latest = vec![Duration::ZERO; RELOADS];
    for client in clients {
        let seen = client.join().expect("a client failed");
        assert!(seen.failed.is_empty(), "{:?}", seen.failed);
        assert_eq!(seen.sent, seen.answered, "every request answered");
        total = (total.0 + seen.sent, total.1 + seen.answered);
        for (i, (asked, _)) in reloaded_at.iter().enumerate() {
            let first = seen.first[i + 2].expect("answered by it");
            latest[i] = latest[i].max(first.saturating_duration_since(*asked));
        }
    }
    stdin.write_all(b"quit\n").expect("quit");
    assert!(host.wait().expect("wait").success());
    for (i, ((asked, done), latest)) in reloaded_at.iter().zip(&latest).enumerate() {
        let reload = done.saturating_duration_since(*asked);
        eprintln!(
            "v{}: reload took {:.2} ms; every client answered by it {:.2} ms after it was asked for",
            i + 2,
            reload.as_secs_f64() * 1e3,
            latest.as_secs_f64() * 1e3
        );
        // The reload itself (copy, validate, load) is most of it; the
        // publication is immediate.
        assert!(
            *latest < reload + Duration::from_millis(100),
            "v{} answered {latest:?} after the reload was asked for",
            i + 2
        );
    }
    eprintln!("{} requests, {} answered, 0 failed", total.0, total.1);
}
