//! The function every variant calls: the same add as the embedded
//! handle's test plugin (`tests/embed/worker.c`'s `first`).

#[unsafe(no_mangle)]
pub fn first(x: u64) -> u64 {
    x + 1
}
