//! The counter plugin in safe Rust: the score goes up every tick.
//!
//! Run it from the repository's root:
//!
//! ```sh
//! hotreload --watch examples/rust-counter/src \
//!   --build "cargo build -p rust-counter" --lib target/debug/librust_counter.so
//! ```
//!
//! Edit the step in `tick` and save: the score carries on from where it was
//! with the new code. Add a field to `Counter` and it starts at zero while
//! the others keep their values. Uncomment the line in `tick` that reads
//! past `milestones` and save: once the score reaches 200 that build
//! panics, and the server rolls back to the previous one, the state as it
//! was before the panicking tick (`[fault] v2 tick 199: panic at
//! src/lib.rs:…: index out of bounds: the len is 4 but the index is 4;
//! rolled back to v1, …`). Saved when the score is already past 196, the
//! panic comes in the trial's ticks instead, and the build is refused
//! before it runs in the server.

// Nothing here needs `unsafe`: the crate's glue is the crate's.
#![deny(unsafe_code)]

use hotreload_plugin::{Host, State};

/// Everything that must outlive a reload lives here, in the host's memory.
#[derive(State)]
#[repr(C)]
pub struct Counter {
    score: i64,
    /// Where the last ten scores passed, newest last.
    milestones: [u32; 4],
    #[state(text)]
    greeting: [u8; 16],
}

fn init(c: &mut Counter, host: &Host) {
    c.score = 0;
    let hello = b"hello";
    c.greeting[..hello.len()].copy_from_slice(hello);
    host.log(&format!("counter starts (seed {})", host.seed()));
}

fn tick(c: &mut Counter, _dt: f64) {
    let before = c.score;
    c.score += 1;
    // let _ = c.milestones[(c.score / 50) as usize]; // panics at 200
    if c.score / 10 != before / 10 {
        c.milestones.rotate_left(1);
        c.milestones[3] = c.score as u32;
        println!("[counter] score={}", c.score);
    }
}

fn shutdown(c: &mut Counter) {
    println!("[counter] final score={}", c.score);
}

fn on_reload(c: &mut Counter, host: &Host) {
    host.log(&format!("new code at score {}", c.score));
}

hotreload_plugin::export! {
    state: Counter,
    init: init,
    tick: tick,
    shutdown: shutdown,
    on_reload: on_reload,
}
