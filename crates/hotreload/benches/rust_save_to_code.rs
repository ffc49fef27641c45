//! Save → new code for a Rust plugin rebuilt by an incremental `cargo
//! build`, beside the C counter rebuilt by `cc` in the same run: two real
//! `hotreload` servers at once, their saves interleaved (the order swapped
//! every round). The clock starts just before the save is written and stops
//! when the server's `[reload] swapped` line arrives; the build's own time
//! is the `[build] success (N ms)` figure. Medians and the spread.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::Server;
use support::rust::{Variant, plugin, server_args, target_dir, warm_up, write_crate};

const ROUNDS: usize = 9;

struct Setup {
    name: &'static str,
    dir: tempfile::TempDir,
    server: Server,
    save: fn(&Path, i64),
    /// save → `[reload] swapped`, and the build's own time, in ms.
    swapped: Vec<f64>,
    built: Vec<f64>,
}

fn save_rust(dir: &Path, step: i64) {
    let source = plugin(&Variant {
        step,
        ..Variant::default()
    });
    std::fs::write(dir.join("src/lib.rs"), source).expect("save lib.rs");
}

fn save_c(dir: &Path, step: i64) {
    let source = support::plugin::counter("c", step as i32);
    std::fs::write(dir.join("logic.c"), source).expect("save logic.c");
}

fn rust_setup() -> Setup {
    warm_up();
    let dir = support::workdir();
    let lib = write_crate(dir.path(), "hr_bench_counter", &plugin(&Variant::default()));
    let args = server_args(&lib);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let target = target_dir();
    let server = Server::start_with_env(dir.path(), &args, &[("CARGO_TARGET_DIR", &target)]);
    Setup {
        name: "Rust, cargo build (debug, incremental)",
        dir,
        server,
        save: save_rust,
        swapped: vec![],
        built: vec![],
    }
}

fn c_setup() -> Setup {
    let dir = support::workdir();
    save_c(dir.path(), 1);
    let server = Server::start_default(dir.path(), &["--no-control"]);
    Setup {
        name: "baseline: C, cc -shared -fPIC",
        dir,
        server,
        save: save_c,
        swapped: vec![],
        built: vec![],
    }
}

fn round(setup: &mut Setup, step: i64) {
    let started = Instant::now();
    (setup.save)(setup.dir.path(), step);
    let built = setup.server.expect_prefix("[build] success (");
    let swapped = setup.server.expect_prefix("[reload] swapped");
    let _ = swapped;
    setup.swapped.push(started.elapsed().as_secs_f64() * 1e3);
    let ms = built["[build] success (".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse::<f64>().ok());
    if let Some(ms) = ms {
        // `[build] success (1.66 s)` is in seconds.
        let seconds = built.contains(" s)");
        setup.built.push(if seconds { ms * 1e3 } else { ms });
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn spread(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

fn main() {
    let mut setups = [rust_setup(), c_setup()];
    for s in &mut setups {
        s.server.expect_prefix("[reload] loaded");
    }
    for r in 0..ROUNDS {
        let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            // A different step each round: a real change to build.
            round(&mut setups[i], 2 + r as i64);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!("save → new code, {ROUNDS} interleaved rounds (2 servers at once, 10 ms ticks)");
    println!("| | save → swapped, median | min – max | build alone, median |");
    println!("| --- | --- | --- | --- |");
    for s in &mut setups {
        let (lo, hi) = spread(&s.swapped);
        println!(
            "| {} | {:.0} ms | {:.0} – {:.0} ms | {:.0} ms |",
            s.name,
            median(&s.swapped),
            lo,
            hi,
            median(&s.built)
        );
        s.server.stop();
    }
}
