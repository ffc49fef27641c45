//! What the fault snapshot costs per tick. Before a tick runs, the tick loop
//! copies the state into a `Snapshot` when one is due: every tick for states
//! up to 1 MiB, every `ceil(size / 1 MiB)` ticks above that. Timed here at
//! 1 KB, 1 MB and 64 MB of state: `Snapshot::take`, `Snapshot::restore`, and
//! the tick loop's own pattern (`due`, then `take` when due) over whole
//! intervals, which is the amortized cost per tick. Baseline, in the same
//! run and interleaved with it: a plain `copy_from_slice` of the same size
//! between two buffers (memcpy bandwidth). No target: the figures show what
//! the copy budget buys.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use hotreload_engine::state::State;
use hotreload_engine::state::snapshot::{BYTES_PER_TICK, Snapshot};

use common::{header, median_f64};

/// Rounds per measurement, interleaved; the figure is the median round.
const ROUNDS: usize = 15;
/// Each round copies about this many bytes, so that small sizes repeat
/// enough to be timed and large ones stay quick.
const BYTES_PER_ROUND: usize = 512 << 20;

struct Size {
    label: &'static str,
    bytes: usize,
}

const SIZES: [Size; 3] = [
    Size {
        label: "1 KB",
        bytes: 1 << 10,
    },
    Size {
        label: "1 MB",
        bytes: 1 << 20,
    },
    Size {
        label: "64 MB",
        bytes: 64 << 20,
    },
];

/// One size's medians, in ns.
struct Figures {
    take: f64,
    restore: f64,
    memcpy: f64,
    /// `due` + `take` when due, per tick, over whole intervals.
    per_tick: f64,
    interval: u64,
}

fn main() {
    header(
        "snapshot",
        "cost of the fault snapshot per tick, vs. a plain copy of the same size",
    );
    let mut results = Vec::new();
    for size in &SIZES {
        results.push((size, measure(size.bytes)));
    }

    println!(
        "method: {ROUNDS} interleaved rounds per figure, each about {} MiB copied; median round's \
         time per operation; states filled with non-zero bytes and every buffer touched before \
         timing; copy budget {} bytes per tick",
        BYTES_PER_ROUND >> 20,
        BYTES_PER_TICK
    );
    println!(
        "{:<7} {:>9} {:>13} {:>13} {:>13} {:>10} {:>14} {:>10}",
        "state", "interval", "take", "restore", "baseline", "take/base", "per tick", "GB/s take"
    );
    for (size, f) in &results {
        println!(
            "{:<7} {:>9} {:>13} {:>13} {:>13} {:>10.2} {:>14} {:>10.1}",
            size.label,
            f.interval,
            time(f.take),
            time(f.restore),
            time(f.memcpy),
            f.take / f.memcpy,
            time(f.per_tick),
            size.bytes as f64 / f.take,
        );
    }
    println!(
        "columns: interval = Snapshot::interval() (ticks between copies); take / restore = one \
         Snapshot::take / restore; baseline = one copy_from_slice of the same size, same run; \
         per tick = due() + take when due, averaged over whole intervals (take / interval + the \
         check)"
    );
    for (size, f) in &results {
        let copied_per_tick = size.bytes as f64 / f.interval as f64;
        println!(
            "{}: {:.0} bytes copied per tick on average (budget {}) -> {}",
            size.label,
            copied_per_tick,
            BYTES_PER_TICK,
            if copied_per_tick <= BYTES_PER_TICK as f64 {
                "within budget"
            } else {
                "OVER BUDGET"
            }
        );
    }
}

fn measure(bytes: usize) -> Figures {
    let reps = (BYTES_PER_ROUND / bytes).max(1);
    let mut state = State::zeroed(bytes).expect("allocate the state");
    fill(state.bytes_mut(), 1);
    let mut snapshot = Snapshot::new(bytes);
    let interval = snapshot.interval();
    // The baseline's buffers: a source with the same contents and a
    // destination of the same size.
    let mut source = vec![0u8; bytes];
    fill(&mut source, 1);
    let mut dest = vec![0u8; bytes];

    // Touch every page of every buffer once (the zeroed allocations are not
    // backed by memory until written) and warm the caches.
    snapshot.take(&state, 0);
    snapshot.restore(&mut state).expect("a copy was taken");
    dest.copy_from_slice(&source);

    // Whole intervals, so every copy that is due is counted once.
    let ticks = ((reps as u64).max(interval) / interval) * interval;

    let mut take = Vec::with_capacity(ROUNDS);
    let mut restore = Vec::with_capacity(ROUNDS);
    let mut memcpy = Vec::with_capacity(ROUNDS);
    let mut per_tick = Vec::with_capacity(ROUNDS);
    let mut tick = 1;
    for round in 0..ROUNDS {
        // The order alternates, so neither always runs on a warmer cache.
        if round % 2 == 0 {
            take.push(time_take(&mut snapshot, &state, reps, &mut tick));
            memcpy.push(time_memcpy(&mut dest, &source, reps));
        } else {
            memcpy.push(time_memcpy(&mut dest, &source, reps));
            take.push(time_take(&mut snapshot, &state, reps, &mut tick));
        }
        restore.push(per_op(reps, || {
            for _ in 0..reps {
                black_box(snapshot.restore(black_box(&mut state)));
            }
        }));
        per_tick.push(time_tick_pattern(bytes, &state, ticks, &mut tick));
    }
    Figures {
        take: median_f64(&mut take),
        restore: median_f64(&mut restore),
        memcpy: median_f64(&mut memcpy),
        per_tick: median_f64(&mut per_tick),
        interval,
    }
}

/// `reps` calls of `Snapshot::take`; ns per call.
fn time_take(snapshot: &mut Snapshot, state: &State, reps: usize, tick: &mut u64) -> f64 {
    per_op(reps, || {
        for _ in 0..reps {
            *tick += 1;
            snapshot.take(black_box(state), *tick);
            black_box(&*snapshot);
        }
    })
}

/// `reps` plain copies of `source` into `dest`; ns per copy.
fn time_memcpy(dest: &mut [u8], source: &[u8], reps: usize) -> f64 {
    per_op(reps, || {
        for _ in 0..reps {
            black_box(&mut *dest).copy_from_slice(black_box(source));
        }
    })
}

/// The tick loop's pattern (`due`, then `take` when due) for `ticks` ticks,
/// a whole number of intervals, so that exactly `ticks / interval` copies
/// are taken; ns per tick.
fn time_tick_pattern(bytes: usize, state: &State, ticks: u64, tick: &mut u64) -> f64 {
    let base = *tick;
    let mut fresh = Snapshot::new(bytes);
    // Backs the fresh copy with memory before timing, as a long-running tick
    // loop's snapshot is; the next copy is due one interval later.
    fresh.take(state, base);
    let start = Instant::now();
    for t in 1..=ticks {
        if fresh.due(black_box(base + t)) {
            fresh.take(black_box(state), base + t);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / ticks as f64;
    black_box(&fresh);
    *tick = base + ticks + 1;
    ns
}

/// Non-zero bytes, so that no page is the kernel's shared zero page.
fn fill(bytes: &mut [u8], seed: u8) {
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed) | 1;
    }
}

fn per_op(reps: usize, f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_nanos() as f64 / reps as f64
}

/// ns, µs or ms, whichever reads best.
fn time(ns: f64) -> String {
    let d = Duration::from_secs_f64(ns / 1e9);
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if d < Duration::from_millis(1) {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{:.3} ms", ns / 1e6)
    }
}
