//! What the host and a worker say to each other.
//!
//! Two channels. Calls go through the **call page**, a page of shared memory
//! that both map: the host writes a request and bumps `request`, the worker
//! wakes (a futex on that word), makes the call, writes the result and bumps
//! `response`, which the host waits on (spinning briefly while the worker
//! runs on another CPU, then a futex; see [`may_spin`]). No
//! system call carries data. Each side says when it sleeps, so that the
//! other makes the wake-up system call only then: a worker that is watching
//! the page (just after a call, or after a warm-up request sent ahead of the
//! next tick) answers without either side entering the kernel. Everything
//! else — the worker's report of what it loaded, and the state blocks the
//! host hands over as descriptors — goes through a `SOCK_SEQPACKET` socket,
//! one message per record.
//!
//! Every field of the page is an atomic: the two processes share it, and a
//! worker that misbehaves can write anything at any time, which the host
//! must read as plain numbers, never as anything that could point into its
//! own memory.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The call page. One per worker; 4 KiB.
#[repr(C)]
pub struct CallPage {
    /// Bumped by the host for every request (a futex word).
    pub request: AtomicU32,
    /// Set to the request's number by the worker when it is done (a futex
    /// word).
    pub response: AtomicU32,
    pub op: AtomicU32,
    /// Non-zero while the worker sleeps on `request` (so a request must
    /// wake it); zero while it is busy or watching the page.
    pub worker_asleep: AtomicU32,
    /// Non-zero while the host sleeps on `response`.
    pub host_asleep: AtomicU32,
    /// The CPU each side ran on when it last sent (the host, a request;
    /// the worker, a response): see [`may_spin`].
    pub host_cpu: AtomicU32,
    pub worker_cpu: AtomicU32,
    /// The hook for [`Op::Hook`].
    pub hook: AtomicU32,
    /// The block a call works on; for [`Op::Migrate`] the old one.
    pub block: AtomicU64,
    /// [`Op::Migrate`]'s new block.
    pub block2: AtomicU64,
    /// `dt` as bits, for a tick.
    pub dt: AtomicU64,
    /// The host context: `seed` and `tick`.
    pub seed: AtomicU64,
    pub tick: AtomicU64,
    /// [`Op::Migrate`]'s old state version.
    pub old_version: AtomicU32,
    /// [`Op::Map`]'s address and size.
    pub addr: AtomicU64,
    pub size: AtomicU64,
    /// The result: one of [`Status`].
    pub status: AtomicU32,
    /// `migrate`'s return value; for [`Op::Describe`], whether there is a
    /// text.
    pub value: AtomicI64,
    /// Set to the request's number as soon as the worker's guard caught a
    /// fault in it, before the worker works out where (which allocates, in
    /// a process whose heap plugin code may have wrecked): if the worker
    /// dies or hangs after this, the host still reports the fault itself.
    pub faulted: AtomicU32,
    /// A fault, as the worker's guard saw it.
    pub fault_signal: AtomicI32,
    pub fault_code: AtomicI32,
    pub fault_addr: AtomicU64,
    pub fault_pc: AtomicU64,
    /// A text: the description, or where a fault was (`tick+0x30
    /// (logic.c:22)`), or what went wrong.
    pub text_len: AtomicU32,
    /// For [`Op::Tick`], the bytes of the tick's input at the start of
    /// `text` (which the reply then reuses).
    pub input_len: AtomicU32,
    pub text: [AtomicU8; TEXT_CAPACITY],
}

/// The CPU this thread runs on now (from the vDSO; `u32::MAX` if unknown).
pub fn current_cpu() -> u32 {
    // SAFETY: no arguments; it only reads which CPU the thread is on.
    u32::try_from(unsafe { libc::sched_getcpu() }).unwrap_or(u32::MAX)
}

/// Whether a side waiting for the other may watch the page by spinning
/// rather than sleep on it at once: only while the other ran on another
/// CPU. On the same CPU, spinning keeps the other from running until the
/// spinner's time is up; and yielding instead (`sched_yield`) costs the
/// yielder its place in the scheduler's order whenever another thread is
/// waiting for that CPU (the kernel's EEVDF scheduler moves its deadline a
/// slice on for each yield): on two busy cores the tick thread and the
/// worker, yielding around each call, each sat 4-6 ms behind background
/// work (a migration, freeing, a build) before they ran again. A sleeper
/// keeps its place and is woken ahead of them.
pub fn may_spin(other_cpu: &AtomicU32) -> bool {
    let other = other_cpu.load(Ordering::Relaxed);
    other != u32::MAX && other != current_cpu()
}

pub const TEXT_CAPACITY: usize = 2048;
pub const PAGE_LEN: usize = 4096;
const _: () = assert!(std::mem::size_of::<CallPage>() <= PAGE_LEN);
const _: () = assert!(hotreload_abi::MAX_INPUT <= TEXT_CAPACITY);

/// What a request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    Init = 1,
    Tick = 2,
    Shutdown = 3,
    Hook = 4,
    Migrate = 5,
    Describe = 6,
    /// Map the block whose descriptor comes next on the socket.
    Map = 7,
    /// Forget block `block`.
    Unmap = 8,
    /// Run the destructors, unload, and exit.
    Exit = 9,
    /// Answer at once, then watch the page for the next request instead of
    /// sleeping: a call is coming.
    Warm = 10,
    /// Map privately the memory file whose descriptor comes next on the
    /// socket, as a block of its own: a trial's copy of the trial image.
    MapCopy = 11,
}

impl Op {
    pub fn from_u32(n: u32) -> Option<Op> {
        Some(match n {
            1 => Op::Init,
            2 => Op::Tick,
            3 => Op::Shutdown,
            4 => Op::Hook,
            5 => Op::Migrate,
            6 => Op::Describe,
            7 => Op::Map,
            8 => Op::Unmap,
            9 => Op::Exit,
            10 => Op::Warm,
            11 => Op::MapCopy,
            _ => return None,
        })
    }

    /// As a line says it: `in init`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Init => "in init",
            Op::Tick => "in tick",
            Op::Shutdown => "in shutdown",
            Op::Hook => "in a hook",
            Op::Migrate => "in migrate",
            Op::Describe => "in describe",
            Op::Map | Op::MapCopy => "mapping a block",
            Op::Unmap => "unmapping a block",
            Op::Exit => "in a destructor",
            Op::Warm => "warming up",
        }
    }
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    /// Plugin code faulted; the fault fields say how.
    Fault = 1,
    /// The worker could not do what was asked (an unknown block); `text`
    /// says why.
    Error = 2,
}

impl CallPage {
    pub fn set_text(&self, text: &str) {
        let bytes = text.as_bytes();
        let n = bytes.len().min(TEXT_CAPACITY);
        for (slot, b) in self.text.iter().zip(&bytes[..n]) {
            slot.store(*b, Ordering::Relaxed);
        }
        self.text_len.store(n as u32, Ordering::Relaxed);
    }

    /// A tick's input, for the worker to read before the call.
    pub fn set_input(&self, input: &[u8]) {
        let n = input.len().min(hotreload_abi::MAX_INPUT);
        for (slot, b) in self.text.iter().zip(&input[..n]) {
            slot.store(*b, Ordering::Relaxed);
        }
        self.input_len.store(n as u32, Ordering::Relaxed);
    }

    /// The tick's input as the host wrote it (bounded whatever the length
    /// word says).
    pub fn input_into(&self, out: &mut Vec<u8>) {
        let n = (self.input_len.load(Ordering::Relaxed) as usize).min(hotreload_abi::MAX_INPUT);
        out.clear();
        out.extend(self.text[..n].iter().map(|b| b.load(Ordering::Relaxed)));
    }

    pub fn text(&self) -> String {
        let n = (self.text_len.load(Ordering::Relaxed) as usize).min(TEXT_CAPACITY);
        let bytes: Vec<u8> = self.text[..n]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The call page, mapped: created by the host, mapped again by the worker
/// from the descriptor it was handed.
pub struct Page {
    ptr: NonNull<CallPage>,
    fd: OwnedFd,
}

impl Page {
    /// A new page: every atomic starts at 0 but the CPUs, unknown.
    pub fn create() -> Result<Page, String> {
        // SAFETY: a NUL-terminated name and flags; the result, if valid, is
        // a new descriptor owned by nobody else.
        let raw = unsafe { libc::memfd_create(c"hotreload-call-page".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(format!(
                "cannot create the call page: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `raw` is the fresh descriptor created above.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        File::from(fd.try_clone().map_err(|e| e.to_string())?)
            .set_len(PAGE_LEN as u64)
            .map_err(|e| format!("cannot size the call page: {e}"))?;
        let page = Page::map(fd)?;
        page.host_cpu.store(u32::MAX, Ordering::Relaxed);
        page.worker_cpu.store(u32::MAX, Ordering::Relaxed);
        Ok(page)
    }

    /// The page behind `fd`, which must be at least [`PAGE_LEN`] bytes.
    pub fn map(fd: OwnedFd) -> Result<Page, String> {
        let len = File::from(fd.try_clone().map_err(|e| e.to_string())?)
            .metadata()
            .map_err(|e| format!("cannot look at the call page: {e}"))?
            .len();
        if len < PAGE_LEN as u64 {
            return Err(format!(
                "expected a call page of {PAGE_LEN} bytes, found {len}"
            ));
        }
        // SAFETY: maps the memfd shared for `PAGE_LEN` bytes, which it has;
        // the mapping lives as long as the `Page` (unmapped in `drop`).
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(format!(
                "cannot map the call page: {}",
                std::io::Error::last_os_error()
            ));
        }
        let ptr = NonNull::new(raw.cast()).ok_or_else(|| "the call page mapped at 0".to_owned())?;
        Ok(Page { ptr, fd })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

impl std::ops::Deref for Page {
    type Target = CallPage;
    fn deref(&self) -> &CallPage {
        // SAFETY: the mapping is `PAGE_LEN` bytes, at least a `CallPage`,
        // and lives as long as `self`; every field is an atomic, so the
        // other process's writes are not data races.
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, not used after this.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), PAGE_LEN) };
    }
}

// SAFETY: the page is shared memory of atomics, and the pointer is owned by
// the `Page`; a `Worker` (and its `Page`) is used by one thread at a time
// (it moves from the reload thread to the tick thread with its version).
unsafe impl Send for Page {}

/// Waits until `word` is no longer `expected`, or `timeout` passes (then,
/// or on a signal, it returns and the caller looks again). Shared between
/// processes: not a private futex.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT reads the word at this address (which lives as long
    // as the page is mapped, longer than this call) and sleeps; the timeout
    // is a valid timespec.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes whoever waits on `word`.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only reads the address to find its waiters.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Appends little-endian numbers and strings; read back with [`Reader`].
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
}

pub use crate::plugin::child::Reader;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_short_ones_are_errors() {
        let mut w = Writer::default();
        w.u8(1).u32(7).i32(-3).u64(u64::MAX).bytes(b"abc");
        let mut r = Reader::new(&w.0);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.i32(), Ok(-3));
        assert_eq!(r.u64(), Ok(u64::MAX));
        assert_eq!(r.string(), Ok("abc".to_owned()));
        assert!(r.u8().is_err());
        let mut short = Reader::new(&w.0[..3]);
        short.u8().expect("one byte");
        assert!(short.u32().is_err());
    }
}
