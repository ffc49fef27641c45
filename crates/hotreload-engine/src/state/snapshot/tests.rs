use super::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn tracked(size: usize) -> State {
    crate::guard::install().expect("guard");
    let state = State::zeroed(size).expect("alloc");
    assert!(state.written_pages().is_some(), "a large state is tracked");
    state
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn small_states_are_copied_every_tick_and_restored_exactly() {
    let mut state = State::zeroed(8).expect("alloc");
    let mut snap = Snapshot::new(8);
    assert_eq!(snap.restore(&mut state), None);
    state.bytes_mut()[0] = 7;
    assert!(snap.due(&state, 3));
    snap.take(&state, 3);
    assert!(snap.due(&state, 4));
    state.bytes_mut()[0] = 99;
    assert_eq!(snap.restore(&mut state), Some(3));
    assert_eq!(state.bytes()[0], 7);
}

#[test]
fn a_tracked_state_is_restored_to_exactly_the_last_take_over_many_ticks() {
    // Not a multiple of the page size: the last page is partial.
    let size = (8 << 20) + 100;
    let mut state = tracked(size);
    let mut snap = Snapshot::new(size);
    let mut rng = Lcg(42);
    let pages = size.div_ceil(PAGE);
    let mut restores = 0;
    for tick in 0..300u64 {
        let before = state.bytes().to_vec();
        assert!(snap.due(&state, tick));
        snap.take(&state, tick);
        // A tick: some pages it wrote last time, some new, some bytes
        // written with the value they had.
        let writes = (rng.next() % 40) as usize;
        for _ in 0..writes {
            let p = if rng.next().is_multiple_of(2) {
                (rng.next() % 8) as usize
            } else {
                (rng.next() as usize) % pages
            };
            let at = (p * PAGE + (rng.next() as usize % PAGE)).min(size - 1);
            let bytes = state.bytes_mut();
            bytes[at] = if rng.next().is_multiple_of(5) {
                bytes[at]
            } else {
                rng.next() as u8
            };
        }
        if rng.next().is_multiple_of(7) {
            assert_eq!(snap.restore(&mut state), Some(tick));
            assert!(
                state.bytes() == before.as_slice(),
                "restore at tick {tick} is exact"
            );
            restores += 1;
        }
    }
    assert!(restores > 10);
    // Steady state: only written pages are copied, not the whole state.
    assert!(
        snap.pages_copied < 300 * 40 + pages as u64 * 2,
        "{}",
        snap.pages_copied
    );
}

#[test]
fn writes_by_the_kernel_into_a_read_only_page_go_through() {
    use std::io::Write;
    let size = 4 << 20;
    let mut state = tracked(size);
    let mut snap = Snapshot::new(size);
    snap.take(&state, 0);
    snap.take(&state, 1); // every page unchanged: all read-only now
    let dir = std::env::temp_dir().join(format!("hr-snap-{}", std::process::id()));
    let mut file = std::fs::File::create(&dir).expect("create");
    file.write_all(&[0xab; 10_000]).expect("write");
    drop(file);
    let fd = std::fs::File::open(&dir).expect("open");
    let at = 3 * PAGE + 17;
    // SAFETY: reads at most 10,000 bytes into the state, which has room.
    let n = unsafe {
        libc::read(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            state.as_mut_ptr().cast::<u8>().add(at).cast(),
            10_000,
        )
    };
    let _ = std::fs::remove_file(&dir);
    assert_eq!(n, 10_000, "{}", std::io::Error::last_os_error());
    assert!(state.bytes()[at..at + 10_000].iter().all(|&b| b == 0xab));
    // And the snapshot knows: a restore undoes the read.
    assert_eq!(snap.restore(&mut state), Some(1));
    assert!(state.bytes().iter().all(|&b| b == 0));
}

/// A tick's writes: 20 pages spread over the state, and now and then a
/// pause for the reader to catch up.
fn scattered_writes(state: &mut State, tick: u64, pages: usize) {
    for k in 0..20 {
        let p = ((tick as usize) * 37 + k * 101) % pages;
        state.bytes_mut()[p * PAGE + (tick as usize % PAGE)] = (tick + k as u64) as u8 | 1;
    }
    if tick.is_multiple_of(50) {
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_chunked_read_is_the_state_of_the_tick_it_started_at() {
    let size = 6 << 20;
    let shared = SharedSnapshot::default();
    shared.reset(size, 1, None);
    shared.mark_live();
    let mut state = tracked(size);
    let pages = size / PAGE;
    let mut history = std::collections::HashMap::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let shared = shared.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut copies = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(c) = shared.read(Duration::from_secs(1)) {
                    copies.push(c);
                }
            }
            copies
        })
    };
    for tick in 0..400u64 {
        shared.take_if_due(&state, tick, None);
        history.insert(tick, state.bytes().to_vec());
        scattered_writes(&mut state, tick, pages);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let copies = reader.join().expect("reader");
    assert!(!copies.is_empty());
    for c in &copies {
        assert!(
            c.bytes == history[&c.tick],
            "the copy of tick {} is that tick's state",
            c.tick
        );
    }
}

/// An image kept across exports, counting how often it was started whole.
#[derive(Default)]
struct Image {
    bytes: Vec<u8>,
    starts: usize,
}

impl CopyTarget for Image {
    fn start(&mut self, size: usize) -> Option<()> {
        self.starts += 1;
        // Not zeroed: what a whole export does not write would show.
        self.bytes = vec![0xee; size];
        Some(())
    }
    fn write_at(&mut self, offset: usize, bytes: &[u8]) -> Option<()> {
        self.bytes
            .get_mut(offset..offset + bytes.len())?
            .copy_from_slice(bytes);
        Some(())
    }
}

/// Exports into one image, while the ticks go on, each rewrite only what
/// changed, and each leaves the image equal to the state of the tick it
/// started at; a reset (a migration) makes the next one whole again.
#[test]
fn an_image_kept_across_exports_is_each_time_the_state_of_its_tick() {
    let size = 6 << 20;
    let shared = SharedSnapshot::default();
    shared.reset(size, 1, None);
    shared.mark_live();
    let mut state = tracked(size);
    let pages = size / PAGE;
    let history = Arc::new(Mutex::new(std::collections::HashMap::<u64, Vec<u8>>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let exporter = {
        let (shared, stop, history) = (shared.clone(), stop.clone(), history.clone());
        std::thread::spawn(move || {
            let mut image = Image::default();
            let mut held = None;
            let mut checked = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(meta) = shared.export_into(Duration::from_secs(1), &mut held, &mut image)
                else {
                    continue;
                };
                let expected = history.lock().expect("history")[&meta.tick].clone();
                assert!(
                    image.bytes == expected,
                    "the image of tick {} is that tick's state",
                    meta.tick
                );
                checked += 1;
            }
            (checked, image.starts)
        })
    };
    for tick in 0..400u64 {
        // Recorded before the take, so an export of it finds it.
        history
            .lock()
            .expect("history")
            .insert(tick, state.bytes().to_vec());
        shared.take_if_due(&state, tick, None);
        scattered_writes(&mut state, tick, pages);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (checked, starts) = exporter.join().expect("exporter");
    assert!(checked > 1, "{checked} exports checked");
    assert_eq!(starts, 1, "only the first export writes the whole image");

    // After a reset, the image is of another snapshot: whole again.
    let mut image = Image::default();
    let mut held = None;
    shared
        .export_into(Duration::from_secs(1), &mut held, &mut image)
        .expect("export");
    // A migration's new block, as the tick loop makes one.
    let mut migrated = tracked(size);
    migrated.bytes_mut().fill(0x33);
    shared.reset(size, 2, None);
    shared.take(&migrated, 500);
    shared
        .export_into(Duration::from_secs(1), &mut held, &mut image)
        .expect("export");
    assert_eq!(image.starts, 2);
    assert!(
        image.bytes == migrated.bytes(),
        "the image is the state after the reset"
    );
}

/// A take that comes while a reader copies a large snapshot waits for one
/// chunk, not for the whole copy: the lock is not fair, and a reader that
/// locked again at once after each chunk would win over the waking taker
/// until it was done. Measured against the read's own length, so that a
/// slow machine moves both alike.
#[test]
fn a_take_waits_for_a_readers_chunk_not_for_its_whole_copy() {
    let size = 64 << 20;
    let shared = SharedSnapshot::default();
    shared.reset(size, 1, None);
    shared.mark_live();
    let mut state = tracked(size);
    state.bytes_mut().fill(0x5a);
    shared.take(&state, 0);
    shared.settle(&state, 0);
    let reading = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let (shared, reading) = (shared.clone(), reading.clone());
        std::thread::spawn(move || {
            let mut longest = Duration::ZERO;
            for _ in 0..3 {
                let began = Instant::now();
                let copy = shared.read(Duration::from_secs(5)).expect("a copy");
                assert_eq!(copy.bytes.len(), size);
                longest = longest.max(began.elapsed());
            }
            reading.store(false, std::sync::atomic::Ordering::Relaxed);
            longest
        })
    };
    let mut worst = Duration::ZERO;
    let mut tick = 1;
    while reading.load(std::sync::atomic::Ordering::Relaxed) {
        state.bytes_mut()[(tick as usize * 4099) % size] ^= 1;
        let began = Instant::now();
        shared.take_if_due(&state, tick, None);
        worst = worst.max(began.elapsed());
        tick += 1;
        std::thread::sleep(Duration::from_micros(500));
    }
    let read = reader.join().expect("reader");
    assert!(
        worst < read / 4,
        "a take waited {worst:?}, while a whole read took {read:?} ({tick} takes)"
    );
}

/// Runs ticks of random writes with a history, then rewinds step by step
/// and checks each state reached against the one recorded at that tick.
fn rewinds_exactly(mut state: State) {
    let size = state.size();
    let bound = Bound {
        ticks: 50,
        bytes: 64 << 20,
    };
    let mut snap = Snapshot::with_history(size, bound);
    let mut rng = Lcg(7);
    let mut recorded = std::collections::HashMap::new();
    let pages = size.div_ceil(PAGE);
    for tick in 0..80u64 {
        snap.take(&state, tick);
        recorded.insert(tick, state.bytes().to_vec());
        for _ in 0..(rng.next() % 6) {
            let at = (rng.next() as usize % pages) * PAGE + rng.next() as usize % PAGE;
            state.bytes_mut()[at.min(size - 1)] = rng.next() as u8;
        }
    }
    snap.take(&state, 80);
    recorded.insert(80, state.bytes().to_vec());
    // Beyond the history: refused, nothing changed.
    let before = state.bytes().to_vec();
    assert!(snap.rewind_to(&mut state, 80, 10).is_err());
    assert!(state.bytes() == before.as_slice());
    let mut at = 80;
    for target in [75u64, 74, 60, 31] {
        assert_eq!(snap.rewind_to(&mut state, at, target), Ok(target));
        at = target;
        assert!(
            state.bytes() == recorded[&target].as_slice(),
            "rewound to {target}"
        );
        // The copy agrees with the state: a fault now restores this tick.
        state.bytes_mut()[0] ^= 0xff;
        assert_eq!(snap.restore(&mut state), Some(target));
        assert!(state.bytes() == recorded[&target].as_slice());
    }
    // Forward again within what the rewinds went back over, in steps and
    // in one go, then back: every state reached is the recorded one.
    for target in [40u64, 74, 80, 31, 80, 31] {
        assert_eq!(snap.rewind_to(&mut state, at, target), Ok(target));
        at = target;
        assert!(
            state.bytes() == recorded[&target].as_slice(),
            "rewound (forward or back) to {target}"
        );
    }
    assert!(
        snap.rewind_to(&mut state, 31, 81).is_err(),
        "beyond what was recorded"
    );
    assert!(state.bytes() == recorded[&31].as_slice());
    // Ticking on after a rewind records from there.
    snap.take(&state, 31);
    state.bytes_mut()[5] ^= 1;
    snap.take(&state, 32);
    assert_eq!(snap.rewind_to(&mut state, 32, 31), Ok(31));
    assert!(state.bytes() == recorded[&31].as_slice());
}

#[test]
fn a_small_state_rewinds_exactly_through_its_history() {
    rewinds_exactly(State::zeroed(3 * PAGE + 10).expect("alloc"));
}

#[test]
fn a_tracked_state_rewinds_exactly_through_its_history() {
    rewinds_exactly(tracked(4 << 20));
}

/// A rewind of more pages than it traps one by one opens the whole state,
/// and (with no other writer) closes it again without marking what it
/// wrote: the state reached is exact, and so is the tracking after it (a
/// later write is seen, a fault restores exactly).
#[test]
fn a_rewind_of_many_pages_is_exact_and_keeps_the_tracking_exact() {
    let size = 4 << 20;
    let pages = size / PAGE;
    let mut state = tracked(size);
    let mut snap = Snapshot::with_history(
        size,
        Bound {
            ticks: 100,
            bytes: 256 << 20,
        },
    );
    let mut rng = Lcg(11);
    let mut recorded = std::collections::HashMap::new();
    for tick in 0..40u64 {
        snap.take(&state, tick);
        recorded.insert(tick, state.bytes().to_vec());
        for _ in 0..40 {
            let at = (rng.next() as usize % pages) * PAGE + rng.next() as usize % PAGE;
            state.bytes_mut()[at] = rng.next() as u8;
        }
    }
    snap.take(&state, 40);
    assert_eq!(snap.rewind_to(&mut state, 40, 0), Ok(0));
    assert!(state.bytes() == recorded[&0].as_slice(), "rewound to 0");
    let marked = {
        let mut marked = Vec::new();
        state.written_pages().expect("tracked").written(&mut marked);
        marked.len()
    };
    assert!(
        marked < pages / 2,
        "the pages the rewind wrote are not left for the next take to compare: {marked} marked"
    );
    // Ticking on: every write is still seen, and a fault restores exactly.
    snap.take(&state, 0);
    for p in [0, pages / 3, pages - 1] {
        state.bytes_mut()[p * PAGE + 5] ^= 0x5a;
    }
    snap.take(&state, 1);
    let at_1 = state.bytes().to_vec();
    for p in [1, pages / 2, pages - 2] {
        state.bytes_mut()[p * PAGE + 9] ^= 0xa5;
    }
    assert_eq!(snap.restore(&mut state), Some(1));
    assert!(
        state.bytes() == at_1.as_slice(),
        "restored to the take at tick 1"
    );
}

#[test]
fn a_migration_waits_for_the_copy_of_the_state_it_is_from() {
    let size = 2 << 20;
    let shared = SharedSnapshot::default();
    shared.reset(size, 1, None);
    shared.mark_live();
    let state = tracked(size);
    let short = Duration::from_millis(5);
    // No copy taken yet (the swap's first tick has not run).
    assert!(!shared.wait_for_copy_of(1, None, short));
    // Taken by another thread while the wait goes on.
    let taker = {
        let shared = shared.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            shared.take_if_due(&state, 0, None);
        })
    };
    assert!(shared.wait_for_copy_of(1, None, Duration::from_secs(5)));
    taker.join().expect("taker");
    // A copy of another state version is not the one.
    assert!(!shared.wait_for_copy_of(2, None, short));
}

/// Copies are taken before each tick, so when a paused loop is rewound the
/// last tick's writes are in no copy yet: they are taken first. A state of
/// scattered writes, few pages each written twice, where the pages only the
/// last tick wrote kept its bytes before.
#[test]
fn a_rewind_takes_in_the_last_ticks_writes_first() {
    let size = 4 << 20;
    let mut state = tracked(size);
    let mut snap = Snapshot::with_history(
        size,
        Bound {
            ticks: 1000,
            bytes: 64 << 20,
        },
    );
    let words = (size - 64) / 4;
    let mut recorded = std::collections::HashMap::new();
    let mut n: u64 = 0;
    for tick in 0..60u64 {
        snap.take(&state, tick);
        recorded.insert(tick, state.bytes().to_vec());
        // A tick: 16 counters pages apart, and the count.
        let bytes = state.bytes_mut();
        for _ in 0..16 {
            let at = 64 + (n.wrapping_mul(7919) as usize % words) * 4;
            bytes[at] = bytes[at].wrapping_add(1);
            n += 1;
        }
        bytes[..8].copy_from_slice(&n.to_le_bytes());
    }
    // Paused after tick 59 ran: the state is at tick 60, the copy at 59.
    assert_eq!(snap.rewind_to(&mut state, 60, 40), Ok(40));
    let differing = (0..size / PAGE)
        .filter(|p| {
            let r = p * PAGE..(p + 1) * PAGE;
            state.bytes()[r.clone()] != recorded[&40][r]
        })
        .count();
    assert_eq!(differing, 0, "pages left as a later tick wrote them");
}

/// After a rewind, a read with the history is the recorded run as if the
/// rewind had not happened: the state before the rewind and the entries
/// all the way to it, so every recorded state can be rebuilt from it. Once
/// the state changes where the rewind left it, what it went back over is
/// gone, and that is said.
#[test]
fn a_read_after_a_rewind_still_holds_the_ticks_it_went_back_over() {
    let size = 2 << 20;
    let mut state = tracked(size);
    let shared = SharedSnapshot::default();
    shared.set_history(Some(Bound {
        ticks: 100,
        bytes: 64 << 20,
    }));
    shared.reset(size, 1, None);
    shared.mark_live();
    let pages = size / PAGE;
    let mut rng = Lcg(5);
    let mut recorded = Vec::new();
    for tick in 0..30u64 {
        shared.take(&state, tick);
        recorded.push(state.bytes().to_vec());
        for _ in 0..8 {
            let at = (rng.next() as usize % pages) * PAGE + rng.next() as usize % PAGE;
            state.bytes_mut()[at] = rng.next() as u8;
        }
    }
    recorded.push(state.bytes().to_vec());
    assert_eq!(shared.rewind_to(&mut state, 30, 20), Ok(20));
    assert_eq!(shared.rewind_to(&mut state, 20, 10), Ok(10), "further back");
    let span = shared.history_span().expect("a history");
    assert_eq!((span.newest, span.rewound_to), (Some(30), Some(10)));
    let (copy, entries) = shared
        .read_with_history(Duration::from_secs(1), Some(5))
        .expect("a read");
    assert_eq!(copy.tick, 30);
    assert!(copy.bytes == recorded[30], "the state before the rewinds");
    let window = crate::state::history::window(&copy.bytes, copy.tick, &entries, PAGE);
    assert_eq!(window.start_tick, 5);
    assert!(window.start == recorded[5]);
    let mut s = window.start.clone();
    for step in &window.steps {
        for (p, content) in &step.after {
            s[p * PAGE..p * PAGE + content.len()].copy_from_slice(content);
        }
        assert!(
            s == recorded[step.tick as usize + 1],
            "after tick {}",
            step.tick
        );
    }
    assert_eq!(window.steps.last().map(|s| s.tick), Some(29));
    // A take at the same tick that finds nothing changed keeps it.
    shared.take(&state, 10);
    assert_eq!(shared.history_span().and_then(|s| s.rewound_to), Some(10));
    // A tick from there: gone, said.
    state.bytes_mut()[PAGE * 3] ^= 1;
    shared.take(&state, 11);
    let span = shared.history_span().expect("a history");
    assert_eq!((span.newest, span.rewound_to), (Some(11), None));
    let notices = shared.take_notices();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("ticks 10..30, which a rewind went back over")),
        "{notices:?}"
    );
}
