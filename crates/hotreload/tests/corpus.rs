//! Corrupt libraries never take the host down: thousands of damaged builds
//! of a real plugin (see `support/corrupt.rs`) go through one real
//! `hotreload` server per mode, one reload each. Every case must end in a
//! rejection that says what was expected and what was found, or in a
//! version that loads and runs (some damage is harmless) or faults and is
//! rolled back; never in the server dying or hanging.
//!
//! The normal test run takes a deterministic subset per mode; the whole
//! corpus runs with `cargo test -p hotreload --test corpus -- --ignored`
//! (a few minutes; RELIABILITY.md has its counts). Set
//! `HOTRELOAD_CORPUS_REPORT=FILE` to have each run append its counts and
//! every death, hang and reasonless rejection to FILE.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use support::corrupt::{self, Base, Variant};
use support::{Server, Waited, workdir};

/// The corpus's seed: change it and every variant changes.
const SEED: u64 = 0x2026_0008;
/// Cases per mode in the normal test run.
const SUBSET: usize = 300;
/// How long one case may take before the server counts as hung. A trial
/// that hangs is killed after `--tick-timeout-ms` (below), so only a host
/// stuck in the loader waits this long.
const CASE_WAIT: Duration = Duration::from_secs(15);

/// How the server runs the corpus.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `--no-probe`: the host loads every build itself, unprobed.
    NoProbe,
    /// `--trial-ticks 0`: a probe only loads each build first.
    LoadProbe,
    /// The default: a probe process loads each build and runs 3 ticks first.
    Trials,
    /// `--isolate --no-probe`: every build goes straight into a live worker;
    /// the server never maps any of them.
    Isolated,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::NoProbe => "no probe (--no-probe)",
            Mode::LoadProbe => "load-only probe (--trial-ticks 0)",
            Mode::Trials => "trials on (default, 3 ticks)",
            Mode::Isolated => "isolated, no trial (--isolate --no-probe)",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Mode::NoProbe => &["--no-probe"],
            Mode::LoadProbe => &["--trial-ticks", "0"],
            Mode::Trials => &[],
            Mode::Isolated => &["--isolate", "--no-probe"],
        }
    }
}

/// What one mode's run came to.
#[derive(Default)]
struct Tally {
    cases: usize,
    rejected: usize,
    /// Rejections whose line does not say why (empty, or a generic
    /// "dlopen failed").
    reasonless: Vec<(String, String)>,
    /// Rejections that give a reason, but not as expected vs found (a
    /// trial's crash names the signal instead): counted, not failed.
    not_expected_found: usize,
    loaded_and_ran: usize,
    /// `[fault]` lines: a loaded variant crashed in the server and was
    /// rolled back.
    faulted_in_server: usize,
    deaths: Vec<(String, String)>,
    hangs: Vec<String>,
    /// The server lived on but could no longer build (its build command
    /// crashed), or refused the uncorrupted library at a health check:
    /// something it ran corrupted it. The case, and the variant that had
    /// been loaded last (or the cases since the last good check), the
    /// likely culprits.
    damaged: Vec<(String, String)>,
    /// Rejections by their first words, for the report.
    reasons: BTreeMap<String, usize>,
    elapsed: Duration,
}

impl Tally {
    fn summary(&self, mode: Mode) -> String {
        format!(
            "{}: {} cases in {:.1} s: {} host deaths, {} hangs, {} damaged, {} rejected ({} without a reason, {} not as expected/found), {} loaded and ran, {} faulted in the server",
            mode.name(),
            self.cases,
            self.elapsed.as_secs_f64(),
            self.deaths.len(),
            self.hangs.len(),
            self.damaged.len(),
            self.rejected,
            self.reasonless.len(),
            self.not_expected_found,
            self.loaded_and_ran,
            self.faulted_in_server,
        )
    }

    fn report(&self, mode: Mode) -> String {
        let mut out = format!("## {}\n\n{}\n\n", mode.name(), self.summary(mode));
        for (name, how) in &self.deaths {
            out.push_str(&format!("- death: {name}: {how}\n"));
        }
        for name in &self.hangs {
            out.push_str(&format!("- hang: {name}\n"));
        }
        for (name, culprit) in &self.damaged {
            out.push_str(&format!("- damaged: {name} (last loaded: {culprit})\n"));
        }
        for (name, line) in &self.reasonless {
            out.push_str(&format!("- reasonless: {name}: {line}\n"));
        }
        out.push_str("\nrejections by reason:\n");
        for (reason, n) in &self.reasons {
            out.push_str(&format!("- {n:5} {reason}\n"));
        }
        out
    }
}

/// The words of a rejection that name its kind, without the numbers.
fn reason_kind(reason: &str) -> String {
    let cut = reason
        .find(|c: char| c == ':' || c.is_ascii_digit())
        .map(|i| {
            // Keep "not a loadable library: <structure>" together.
            let rest = &reason[i..];
            if reason[..i].ends_with("not a loadable library") {
                i + 2 + rest[2..].find([':', ',']).unwrap_or(rest.len() - 2)
            } else {
                i
            }
        })
        .unwrap_or(reason.len())
        .min(reason.len());
    reason[..cut].trim().chars().take(90).collect()
}

/// Whether a rejection's reason says why at all.
fn says_why(reason: &str) -> bool {
    let generic = [
        "",
        "not a loadable library: dlopen refused it: dlopen failed",
        "not a loadable library: dlopen refused it: dlopen failed, but system did not report the error",
    ];
    !generic.contains(&reason.trim())
}

/// Whether it says what was expected and what was found.
fn says_expected_found(reason: &str) -> bool {
    reason.contains("expected") && reason.contains("found")
}

fn place(dir: &Path, bytes: &[u8]) {
    let tmp = dir.join("logic.so.tmp");
    std::fs::write(&tmp, bytes).expect("write the variant");
    std::fs::rename(&tmp, dir.join("logic.so")).expect("put the variant in place");
}

fn start(dir: &Path, mode: Mode, good: &[u8]) -> Server {
    place(dir, good);
    let mut args = vec![
        "--watch",
        "watch.txt",
        "--build",
        "true",
        "--lib",
        "logic.so",
        "--tick-ms",
        "5",
        "--state-every",
        "1",
        "--tick-timeout-ms",
        "200",
        "--keep-versions",
        "2",
    ];
    args.extend_from_slice(mode.args());
    let mut server = Server::start(dir, &args);
    match server.wait_line(support::WAIT, |l| l.starts_with("[reload] loaded")) {
        Waited::Line(_) => server,
        _ => panic!(
            "the uncorrupted plugin did not load:\n{}",
            server.transcript()
        ),
    }
}

fn how_it_ended(server: &mut Server) -> String {
    use std::os::unix::process::ExitStatusExt;
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = server.try_status() {
            break status;
        }
        if Instant::now() >= deadline {
            break server.kill();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let last: Vec<String> = server.lines().into_iter().rev().take(3).collect();
    match (status.signal(), status.code()) {
        (Some(signal), _) => format!(
            "killed by signal {signal}{}; last lines: {last:?}",
            if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            }
        ),
        (None, Some(code)) => format!("exited with code {code}; last lines: {last:?}"),
        _ => format!("{status:?}"),
    }
}

/// Runs `variants` through one server in `mode`, restarting it after a
/// death or a hang.
fn run(mode: Mode, bases: &[Base], variants: &[Variant]) -> Tally {
    let dir = workdir();
    std::fs::write(dir.path().join("watch.txt"), "never changes\n").expect("write watch.txt");
    let good = &bases[0].bytes;
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut server = start(dir.path(), mode, good);
    let mut last_loaded = String::from("(none)");
    // The cases since the last health check, and whether one of them
    // faulted (plugin code ran and crashed: the likeliest to leave damage).
    let mut since_check: Vec<String> = Vec::new();
    for (i, variant) in variants.iter().enumerate() {
        let faults_before = count_faults(&server);
        if i > 0 && i % 250 == 0 {
            eprintln!("corpus {}: {i} of {} cases", mode.name(), variants.len());
        }
        tally.cases += 1;
        if std::env::var_os("HOTRELOAD_TEST_ECHO").is_some() {
            eprintln!("corpus case {i}: {}", variant.name);
        }
        place(dir.path(), &variant.bytes(bases));
        server.signal(nix::sys::signal::Signal::SIGUSR1);
        let outcome = server.wait_line(CASE_WAIT, |l| {
            l.starts_with("[reload] rejected: ")
                || l.starts_with("[reload] swapped")
                || l.starts_with("[reload] the build is byte for byte")
                || l.starts_with("[build] failed")
        });
        let ended = match outcome {
            Waited::Line(line) if line.starts_with("[reload] swapped") => {
                tally.loaded_and_ran += 1;
                last_loaded = format!("{} ({line})", variant.name);
                watch_it_run(&mut server, &line)
            }
            Waited::Line(line) if line.starts_with("[build] failed") => {
                // `true` cannot fail: the server itself is broken.
                tally
                    .damaged
                    .push((variant.name.clone(), last_loaded.clone()));
                server.kill();
                tally.faulted_in_server += count_faults(&server);
                server = start(dir.path(), mode, good);
                last_loaded = "(none)".into();
                continue;
            }
            Waited::Line(line) if line.starts_with("[reload] rejected") => {
                tally.rejected += 1;
                let reason = line
                    .strip_prefix("[reload] rejected: ")
                    .unwrap_or("")
                    .rsplit_once(" (keeping v")
                    .map_or(line.as_str(), |(r, _)| r)
                    .to_owned();
                if !says_why(&reason) {
                    tally.reasonless.push((variant.name.clone(), line.clone()));
                } else if !says_expected_found(&reason) {
                    tally.not_expected_found += 1;
                }
                *tally.reasons.entry(reason_kind(&reason)).or_default() += 1;
                None
            }
            Waited::Line(_) => None,
            other => Some(other),
        };
        match ended {
            None => {}
            Some(Waited::TimedOut) => {
                tally.hangs.push(variant.name.clone());
                server.kill();
                tally.faulted_in_server += count_faults(&server);
                server = start(dir.path(), mode, good);
                last_loaded = "(none)".into();
            }
            Some(_) => {
                let how = format!("{} (last loaded: {last_loaded})", how_it_ended(&mut server));
                tally.deaths.push((variant.name.clone(), how));
                tally.faulted_in_server += count_faults(&server);
                server = start(dir.path(), mode, good);
                last_loaded = "(none)".into();
                since_check.clear();
                continue;
            }
        }
        since_check.push(variant.name.clone());
        let faulted = count_faults(&server) > faults_before;
        if (faulted || since_check.len() >= HEALTH_EVERY) && !healthy(&mut server, dir.path(), good)
        {
            tally
                .damaged
                .push((since_check.join(" | "), last_loaded.clone()));
            server.kill();
            tally.faulted_in_server += count_faults(&server);
            server = start(dir.path(), mode, good);
            last_loaded = "(none)".into();
        }
        if faulted || since_check.len() >= HEALTH_EVERY {
            since_check.clear();
        }
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let status = server.wait();
    if status.code().is_none() {
        tally
            .deaths
            .push(("(at exit)".into(), how_it_ended(&mut server)));
    }
    tally.faulted_in_server += count_faults(&server);
    tally.elapsed = started.elapsed();
    tally
}

/// Cases between two health checks when none faulted.
const HEALTH_EVERY: usize = 100;

/// Whether the server still loads and runs the uncorrupted library: a
/// server that a damaged case left broken refuses it (or worse), though it
/// lives on.
fn healthy(server: &mut Server, dir: &Path, good: &[u8]) -> bool {
    place(dir, good);
    server.signal(nix::sys::signal::Signal::SIGUSR1);
    match server.wait_line(CASE_WAIT, |l| {
        l.starts_with("[reload] rejected: ")
            || l.starts_with("[reload] swapped")
            || l.starts_with("[reload] the build is byte for byte")
            || l.starts_with("[build] failed")
    }) {
        Waited::Line(line) if line.starts_with("[reload] swapped") => {
            let ticked = format!("(v{}, tick ", version_of(&line));
            (0..2).all(|_| {
                matches!(
                    server.wait_line(CASE_WAIT, |l| l.starts_with("[state]")
                        && l.contains(&ticked)),
                    Waited::Line(_)
                )
            })
        }
        Waited::Line(line) => line.starts_with("[reload] the build is byte for byte"),
        _ => false,
    }
}

/// `7` in `[reload] swapped logic.so (api=1, v7, …)`.
fn version_of(swapped: &str) -> String {
    swapped
        .split(", v")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or("?")
        .to_owned()
}

/// After a swap: the new version's first ticks, or its fault. `Some` when
/// the server died or hung meanwhile.
fn watch_it_run(server: &mut Server, swapped: &str) -> Option<Waited> {
    let version = version_of(swapped);
    let ticked = format!("(v{version}, tick ");
    let faulted = format!("[fault] v{version} ");
    for _ in 0..2 {
        match server.wait_line(CASE_WAIT, |l| {
            l.starts_with(&faulted) || (l.starts_with("[state]") && l.contains(&ticked))
        }) {
            Waited::Line(line) if line.starts_with("[fault]") => return None,
            Waited::Line(_) => {}
            other => return Some(other),
        }
    }
    None
}

fn count_faults(server: &Server) -> usize {
    server.count(|l| l.starts_with("[fault]"))
}

/// The corpus; `HOTRELOAD_CORPUS_ONLY="name|name"` keeps just those cases,
/// in that order (to replay a death: the culprit, then the case), and
/// `HOTRELOAD_CORPUS_DUMP=DIR` writes each kept case's bytes there.
fn corpus() -> (tempfile::TempDir, Vec<Base>, Vec<Variant>) {
    let dir = workdir();
    let bases = corrupt::build_bases(dir.path());
    let mut variants = corrupt::corpus(&bases, SEED);
    if let Ok(only) = std::env::var("HOTRELOAD_CORPUS_ONLY") {
        variants = only
            .split('|')
            .filter_map(|name| variants.iter().find(|v| v.name == name.trim()).cloned())
            .collect();
    }
    if let Some(out) = std::env::var_os("HOTRELOAD_CORPUS_DUMP") {
        for (i, v) in variants.iter().enumerate() {
            std::fs::write(Path::new(&out).join(format!("{i}.so")), v.bytes(&bases))
                .expect("dump a case");
        }
    }
    (dir, bases, variants)
}

fn check(mode: Mode, variants: &[Variant], bases: &[Base]) {
    let tally = run(mode, bases, variants);
    eprintln!("{}", tally.summary(mode));
    if let Some(path) = std::env::var_os("HOTRELOAD_CORPUS_REPORT") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the report");
        writeln!(file, "{}", tally.report(mode)).expect("write the report");
    }
    assert!(
        tally.deaths.is_empty()
            && tally.hangs.is_empty()
            && tally.damaged.is_empty()
            && tally.reasonless.is_empty(),
        "{}",
        tally.report(mode)
    );
}

#[test]
fn the_corpus_is_large_and_covers_every_kind_of_damage() {
    let (_dir, bases, variants) = corpus();
    let mut composition = BTreeMap::<(usize, &str), usize>::new();
    for v in &variants {
        *composition.entry((v.base, v.kind())).or_default() += 1;
    }
    for ((base, kind), n) in &composition {
        eprintln!("corpus: {} {kind}: {n}", bases[*base].name);
    }
    eprintln!("corpus: {} variants", variants.len());
    assert!(variants.len() >= 2000, "{} variants", variants.len());
    for kind in ["truncate", "flip", "field"] {
        assert!(
            variants.iter().filter(|v| v.kind() == kind).count() >= 200,
            "too few {kind} variants"
        );
    }
    for region in [
        ".dynamic",
        ".dynsym",
        ".dynstr",
        ".gnu.hash",
        ".hash",
        ".rela.dyn",
        ".rela.plt",
        ".gnu.version",
        ".text",
        ".data",
        ".init_array",
        ".eh_frame",
        "program header",
        "section headers",
        "ELF header",
    ] {
        assert!(
            variants.iter().any(|v| v.name.contains(region)),
            "nothing damages {region}"
        );
    }
    // The same seed gives the same corpus.
    let again = corrupt::corpus(&bases, SEED);
    assert_eq!(again.len(), variants.len());
    assert!(
        again
            .iter()
            .zip(&variants)
            .all(|(a, b)| a.name == b.name && a.bytes(&bases) == b.bytes(&bases))
    );
}

/// The whole corpus through the host's checks alone, in this process (no
/// loader involved): none panics (this is a debug build, so an arithmetic
/// overflow would), and every refusal of an ELF file says what was
/// expected and what was found.
#[test]
fn the_checks_judge_the_whole_corpus_with_reasons() {
    use hotreload_engine::Rejection;
    use hotreload_engine::plugin::precheck::precheck;
    let (_dir, bases, variants) = corpus();
    let mut refused = 0;
    for v in &variants {
        match precheck(&v.bytes(&bases)) {
            Ok(_) => {}
            Err(Rejection::NotLoadable(why)) => {
                refused += 1;
                assert!(
                    says_expected_found(&why),
                    "{}: no expected/found in: {why}",
                    v.name
                );
            }
            Err(Rejection::MissingEntryPoint(why)) => {
                refused += 1;
                assert!(says_expected_found(&why), "{}: {why}", v.name);
            }
            Err(other) => panic!("{}: the checks cannot refuse with {other:?}", v.name),
        }
    }
    assert!(refused > variants.len() / 2, "{refused} refused");
}

#[test]
fn a_subset_never_kills_the_host_without_a_probe() {
    let (_dir, bases, variants) = corpus();
    check(Mode::NoProbe, &corrupt::subset(&variants, SUBSET), &bases);
}

#[test]
fn a_subset_never_kills_the_host_with_a_load_only_probe() {
    let (_dir, bases, variants) = corpus();
    check(Mode::LoadProbe, &corrupt::subset(&variants, SUBSET), &bases);
}

#[test]
fn a_subset_never_kills_the_host_with_trials_on() {
    let (_dir, bases, variants) = corpus();
    check(Mode::Trials, &corrupt::subset(&variants, SUBSET), &bases);
}

#[test]
fn a_subset_never_kills_the_host_in_isolated_mode() {
    let (_dir, bases, variants) = corpus();
    check(Mode::Isolated, &corrupt::subset(&variants, SUBSET), &bases);
}

#[test]
#[ignore = "the whole corpus takes minutes; run it with --ignored"]
fn the_whole_corpus_never_kills_the_host_in_isolated_mode() {
    let (_dir, bases, variants) = corpus();
    check(Mode::Isolated, &variants, &bases);
}

#[test]
#[ignore = "the whole corpus takes minutes; run it with --ignored"]
fn the_whole_corpus_never_kills_the_host_without_a_probe() {
    let (_dir, bases, variants) = corpus();
    check(Mode::NoProbe, &variants, &bases);
}

#[test]
#[ignore = "the whole corpus takes minutes; run it with --ignored"]
fn the_whole_corpus_never_kills_the_host_with_a_load_only_probe() {
    let (_dir, bases, variants) = corpus();
    check(Mode::LoadProbe, &variants, &bases);
}

#[test]
#[ignore = "the whole corpus takes minutes; run it with --ignored"]
fn the_whole_corpus_never_kills_the_host_with_trials_on() {
    let (_dir, bases, variants) = corpus();
    check(Mode::Trials, &variants, &bases);
}
