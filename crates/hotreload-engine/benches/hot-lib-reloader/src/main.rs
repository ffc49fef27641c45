//! hot-lib-reloader's generated call (`hot_lib::first(x)`: its wrapper
//! takes the reloader's read lock and looks the symbol up, every call)
//! beside a direct call through a pointer to the same function in the same
//! loaded library, from 1, 2 and 8 threads. Each thread's cost is its own
//! CPU time per call (`CLOCK_THREAD_CPUTIME_ID`), as in `benches/threads.rs`;
//! the two variants' rounds are interleaved, the order alternating; the
//! figure is the median over rounds of the mean over threads. No reload
//! happens while it measures.

use std::sync::{Arc, Barrier};

#[hot_lib_reloader::hot_module(dylib = "bench_lib")]
mod hot_lib {
    hot_functions_from_file!("lib/src/lib.rs");
}

const CALLS: u64 = 2_000_000;
const ROUNDS: usize = 7;
const THREADS: [usize; 3] = [1, 2, 8];

type First = fn(u64) -> u64;

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Direct,
    HotLib,
}

fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[inline(never)]
fn run(variant: Variant, direct: First, n: u64) -> u64 {
    let mut x = 0u64;
    for _ in 0..n {
        let arg = std::hint::black_box(x & 1023);
        x = x.wrapping_add(match variant {
            Variant::Direct => std::hint::black_box(direct)(arg),
            Variant::HotLib => hot_lib::first(arg),
        });
    }
    x
}

fn round(variant: Variant, threads: usize, direct: First) -> f64 {
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                run(variant, direct, 1000);
                start.wait();
                let t0 = thread_cpu_ns();
                std::hint::black_box(run(variant, direct, CALLS));
                (thread_cpu_ns() - t0) as f64 / CALLS as f64
            })
        })
        .collect();
    let per: Vec<f64> = handles
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .collect();
    per.iter().sum::<f64>() / per.len() as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // The same library hot-lib-reloader loaded (its own shadow copy of
    // it): a pointer to `first` in it, taken once, is the direct call.
    let _ = hot_lib::first(0);
    let path = std::env::current_exe()
        .expect("this executable")
        .with_file_name(libloading::library_filename("bench_lib"));
    // SAFETY: the library is this workspace's own `bench_lib`, whose only
    // export is `first`, a safe Rust `fn(u64) -> u64`; it stays loaded
    // until the end of `main`.
    let library = unsafe { libloading::Library::new(&path) }
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
    // SAFETY: as above, the symbol has that signature.
    let direct: First = *unsafe { library.get::<First>(b"first") }.expect("the symbol `first`");
    println!("== hot-lib-reloader: its generated call vs a direct call of the same function");
    println!(
        "method: {ROUNDS} interleaved rounds; {CALLS} calls per thread and round; each thread's CPU ns per call, mean over threads, median over rounds"
    );
    for threads in THREADS {
        let (mut d, mut h) = (Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            let order = if r % 2 == 0 {
                [Variant::Direct, Variant::HotLib]
            } else {
                [Variant::HotLib, Variant::Direct]
            };
            for v in order {
                let ns = round(v, threads, direct);
                if v == Variant::Direct {
                    d.push(ns)
                } else {
                    h.push(ns)
                }
            }
        }
        let (d, h) = (median(d), median(h));
        println!(
            "{threads} thread(s): baseline: direct call {d:.2} ns; hot-lib-reloader call {h:.2} ns (+{:.2} ns)",
            h - d
        );
    }
}
