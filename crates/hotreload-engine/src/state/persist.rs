//! The state file: the host-owned state saved to disk and restored at start.
//!
//! With `--state-file PATH` the host saves its state at exit and every N
//! ticks ([`save`]) and restores it at start ([`load`]). The file records the
//! layout the state was saved with, so that a start with a plugin whose state
//! changed can migrate it field by field: that is the caller's job, with the
//! [`Saved::layout`] this module returns. A missing file
//! ([`PersistError::Missing`]) means "start fresh"; every other error means
//! the caller stops with its own exit code and never touches the file, so a
//! saved state is never overwritten by a fresh one.
//!
//! # Format (version 2)
//!
//! Integers are little-endian and fixed-width; a string is a `u32` byte
//! length followed by that many bytes of UTF-8.
//!
//! | Offset     | Size | Content                                                   |
//! |------------|------|-----------------------------------------------------------|
//! | 0          | 8    | magic bytes `\x89HRSTATE`                                 |
//! | 8          | 4    | format version, `u32` ([`FORMAT_VERSION`])                |
//! | 12         | 8    | length of the whole file, checksum included, `u64`        |
//! | 20         | 4    | the plugin's state version, `u32` (0 if it declares none) |
//! | 24         | 8    | state size `S`, `u64`                                     |
//! | 32         | 1    | layout present: 0 or 1                                    |
//! | 33         | `L`  | the layout, if present (below)                            |
//! | 33 + `L`   | `S`  | the state's bytes, as the host holds them                 |
//! | 33+`L`+`S` | 4    | CRC-32 (IEEE 802.3) of every byte before it, `u32`        |
//!
//! The layout: its size (`u64`); its source (`u8`: 0 the plugin's schema, 1
//! debug info, then two strings: the type's name and how it was chosen); the
//! field count (`u64`); then per field: name (string), offset (`u64`), kind
//! (`u8`: 1 integer, 2 float, 3 bool, 4 pointer), signed (`u8`, 0 or 1),
//! width in bytes (`u8`), element count (`u64`), transient (`u8`, 0 or 1),
//! then the shape: the number of dimensions (`u8`, 0 for a plain scalar, at
//! most [`MAX_DIMS`]) and each dimension (`u64`, outermost first; their
//! product is the element count), then how values are shown (`u8`: 0 as
//! numbers, 1 as text, 2 by enumerator, followed by the enumerator count
//! (`u32`) and per enumerator its value (`i128`, 16 bytes) and name
//! (string)).
//!
//! Version 1, written before shapes were recorded, is version 2 without the
//! shape and the display: [`load`] reads it as one dimension of the element
//! count (none for a count of 1), shown as numbers. A migration from such a
//! flat array to a shape of the same element count keeps every element in
//! memory order, which is exactly how the saved bytes were laid out.
//!
//! The first 20 bytes keep their meaning in every future format version, so
//! that any version can tell "not a state file", "a version I do not read"
//! and "cut short" apart before it parses anything else. [`load`] opens the
//! file without blocking and refuses anything but a regular file (a FIFO
//! would block for ever, a device be read for ever); then it checks, in
//! order: magic, version, length (against the file's real size, before
//! reading it), checksum, then every field; every length it reads is checked
//! against the bytes actually left, so a damaged length cannot make it
//! allocate more than the file holds. A file over 64 MiB has its checksum
//! checked a chunk at a time before any of it is held in memory (a sparse
//! file whose header claims gigabytes is refused without taking them), and
//! that read stops for a pending Ctrl-C. [`save`] refuses what [`load`] would
//! refuse (a layout that does not fit the state), so that a file it writes
//! always loads back.
//!
//! # Crash safety
//!
//! [`save`] never writes to `PATH` itself. Each step has a reason:
//!
//! 1. **A temporary file in the same directory**: `rename` is atomic only
//!    within one file system; a temporary file in `/tmp` may be on another.
//! 2. **An unpredictable name, created with `O_EXCL`** (`.NAME.tmp-PID-`
//!    and twelve random characters), **with the state file's own mode**
//!    (0600 for a new one): two writers, or a writer and a leftover of a
//!    killed one, never share a file; a symlink planted at that name is not
//!    followed; another user of a shared folder cannot block saves by
//!    creating the next name first; and a save never widens who can read
//!    the state.
//! 3. **Write everything**, then **`fsync` the file**: a process killed with
//!    `kill -9` loses nothing the kernel already has, but after a power loss
//!    a rename can reach the disk before the data it names (the classic
//!    zero-length file after a crash); the `fsync` orders data before name.
//! 4. **`rename` over `PATH`**: the switch from the old file to the new one is
//!    atomic, so `PATH` names either the previous complete file or the new
//!    complete one at every moment, whenever the writer is killed.
//! 5. **`fsync` the directory**: the rename is a change to the directory;
//!    until the directory is synced a power loss can undo it, and a save
//!    reported done would come back as the previous state.
//!
//! A writer killed between steps 2 and 4 leaves its temporary file behind.
//! [`load`] never looks at it, and the next [`save`] removes every one whose
//! writer process no longer exists (and only this user's). The checksum
//! catches what these steps
//! cannot: a file damaged on disk, cut short by a copy, or edited by hand.
//!
//! `PATH` itself is replaced: if it is a symlink, the link is replaced by a
//! regular file rather than its target being written through.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use crate::layout::{Enumerator, Field, Layout, Scalar, Shown, Source};

mod atomic;
mod crc;
pub(crate) use atomic::{create_temp, split_path};
#[cfg(test)]
use crc::CRC_TABLES;
use crc::{Crc32, crc32};

/// The CRC-32 the state file uses, for formats built on it (a recording).
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32(bytes)
}

/// Files larger than this have their checksum checked, reading in chunks,
/// before they are read into memory.
const STREAM_CHECK_FROM: usize = 64 << 20;

/// The first bytes of every state file. The non-ASCII first byte keeps text
/// files from ever matching.
pub const MAGIC: [u8; 8] = *b"\x89HRSTATE";

/// The format version this module writes; it reads this and every earlier
/// one.
pub const FORMAT_VERSION: u32 = 2;

/// The most dimensions a field of a state file may have.
pub const MAX_DIMS: usize = 32;

/// Magic, format version and file length: the part every version shares.
const PREAMBLE_LEN: usize = 20;
/// The preamble plus state version, state size and the layout flag.
const HEADER_LEN: usize = 33;
const CHECKSUM_LEN: usize = 4;
/// A file with no layout and an empty state.
const MIN_FILE_LEN: usize = HEADER_LEN + CHECKSUM_LEN;
/// The fewest bytes one field takes in version 1 (an empty name).
const MIN_FIELD_LEN_V1: usize = 4 + 8 + 1 + 1 + 1 + 8 + 1;
/// The fewest bytes one field takes in version 2: a scalar shown as a number.
const MIN_FIELD_LEN: usize = MIN_FIELD_LEN_V1 + 1 + 1;
/// The fewest bytes one enumerator takes (an empty name).
const MIN_ENUMERATOR_LEN: usize = 16 + 4;
/// How much of a file is read before it is known to be a state file: enough
/// to describe a foreign one.
const PROBE_LEN: usize = 64;

/// A state read back from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    pub state: Vec<u8>,
    /// The plugin's declared state version at save time (0 if none).
    pub state_version: u32,
    /// The layout the state had, if it was known.
    pub layout: Option<Layout>,
}

/// A state to save, borrowed from the host.
#[derive(Clone, Copy, Debug)]
pub struct SavedRef<'a> {
    pub state: &'a [u8],
    pub state_version: u32,
    pub layout: Option<&'a Layout>,
}

impl<'a> From<&'a Saved> for SavedRef<'a> {
    fn from(saved: &'a Saved) -> SavedRef<'a> {
        SavedRef {
            state: &saved.state,
            state_version: saved.state_version,
            layout: saved.layout.as_ref(),
        }
    }
}

/// Why a state file could not be read or written.
///
/// The caller names `PATH` in front of the message; the messages name a file
/// themselves only when it is another one (the temporary file, the
/// directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersistError {
    /// No file at `PATH` yet: the caller starts fresh.
    Missing,
    /// The file system refused: the message names the file and the step.
    Io(String),
    /// The file does not start with [`MAGIC`]; what it looks like instead.
    NotAStateFile { found: String },
    /// A state file of another format version.
    UnsupportedVersion { expected: u32, found: u32 },
    /// The file ends before the length its header gives (bytes).
    Truncated { expected: usize, found: usize },
    /// Checksum mismatch, or a field with an impossible value.
    Corrupt(String),
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::Missing => {
                f.write_str("no state file: expected one, found none (a first run starts fresh)")
            }
            PersistError::Io(why) => f.write_str(why),
            PersistError::NotAStateFile { found } => write!(
                f,
                "not a hotreload state file: expected the magic bytes \\x89HRSTATE, found {found}"
            ),
            PersistError::UnsupportedVersion { expected, found } => write!(
                f,
                "unsupported state file format: expected version {expected}, found version {found} ({})",
                if found > expected {
                    "written by a newer hotreload"
                } else {
                    "no hotreload writes it"
                }
            ),
            PersistError::Truncated { expected, found } => write!(
                f,
                "truncated state file: expected {expected} bytes, found {found}"
            ),
            PersistError::Corrupt(why) => write!(f, "corrupt state file: {why}"),
        }
    }
}

impl std::error::Error for PersistError {}

/// The whole file `save` would write, as bytes: for handing a state to
/// another process (a trial probe), where a crash loses nothing worth the
/// two fsyncs `save` makes.
pub fn encode(saved: &SavedRef<'_>) -> Result<Vec<u8>, PersistError> {
    let mut out = encode_head(saved)?;
    out.extend_from_slice(saved.state);
    let mut crc = Crc32::new();
    crc.update(&out);
    out.extend_from_slice(&crc.finish().to_le_bytes());
    Ok(out)
}

/// Saves `saved` to `path`, atomically (see the module documentation): when
/// this returns `Ok`, `path` holds the new state durably; when it fails or
/// the process dies on the way, `path` holds the previous file untouched.
pub fn save(path: &Path, saved: &SavedRef<'_>) -> Result<(), PersistError> {
    let head = encode_head(saved)?;
    let mut crc = Crc32::new();
    crc.update(&head);
    crc.update(saved.state);
    let checksum = crc.finish().to_le_bytes();
    atomic::replace(path, &[head.as_slice(), saved.state, &checksum])
}

/// Reads the state file at `path`. Never panics, whatever the file holds.
pub fn load(path: &Path) -> Result<Saved, PersistError> {
    let io_error = |e: io::Error| {
        PersistError::Io(format!(
            "cannot read the state file {}: {e}",
            path.display()
        ))
    };
    let Some(mut file) = atomic::open_for_reading(path)? else {
        return Err(PersistError::Missing);
    };
    let mut bytes = Vec::with_capacity(PROBE_LEN);
    (&mut file)
        .take(PROBE_LEN as u64)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;

    if !bytes.starts_with(&MAGIC) {
        if !bytes.is_empty() && MAGIC.starts_with(&bytes) {
            return Err(PersistError::Truncated {
                expected: PREAMBLE_LEN,
                found: bytes.len(),
            });
        }
        let len = file.metadata().ok().map(|m| m.len());
        return Err(PersistError::NotAStateFile {
            found: describe_foreign(&bytes, len),
        });
    }
    let Some(version) = le_u32(&bytes, MAGIC.len()) else {
        return Err(PersistError::Truncated {
            expected: PREAMBLE_LEN,
            found: bytes.len(),
        });
    };
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(PersistError::UnsupportedVersion {
            expected: FORMAT_VERSION,
            found: version,
        });
    }
    let Some(total) = le_u64(&bytes, 12) else {
        return Err(PersistError::Truncated {
            expected: PREAMBLE_LEN,
            found: bytes.len(),
        });
    };
    let file_len = file.metadata().map_err(io_error)?.len();
    if total > file_len {
        return Err(PersistError::Truncated {
            expected: usize::try_from(total).unwrap_or(usize::MAX),
            found: usize::try_from(file_len).unwrap_or(usize::MAX),
        });
    }
    if total < MIN_FILE_LEN as u64 {
        return Err(PersistError::Corrupt(format!(
            "the header gives the file's length as {total} bytes: expected at least {MIN_FILE_LEN}"
        )));
    }
    if file_len > total {
        return Err(PersistError::Corrupt(format!(
            "expected {total} bytes (the length in the header), found {file_len}: \
             bytes after the checksum, or a damaged header"
        )));
    }
    // `total <= file_len`: the file really has that many bytes, so reading
    // them allocates no more than the file's size.
    let total = usize::try_from(total).map_err(|_| {
        PersistError::Corrupt(format!(
            "a {total}-byte file does not fit in this machine's memory"
        ))
    })?;
    // A file that claims gigabytes (a sparse one, or a damaged length) is
    // checked against its checksum before its bytes are held in memory.
    if total > STREAM_CHECK_FROM {
        atomic::check_checksum_streaming(&file, total, CHECKSUM_LEN).map_err(|e| match e {
            atomic::StreamCheck::Io(e) => io_error(e),
            atomic::StreamCheck::Interrupted(signal) => PersistError::Io(format!(
                "reading the state file {} was interrupted by {signal}",
                path.display()
            )),
            atomic::StreamCheck::Mismatch { stored, computed } => PersistError::Corrupt(format!(
                "checksum mismatch: expected {stored:#010x} (stored at byte {}), found \
                 {computed:#010x} (computed over the {} bytes before it)",
                total - CHECKSUM_LEN,
                total - CHECKSUM_LEN
            )),
        })?;
    }
    bytes.reserve(total.saturating_sub(bytes.len()));
    (&mut file)
        .take((total - bytes.len().min(total)) as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() < total {
        // Shrunk since its size was read.
        return Err(PersistError::Truncated {
            expected: total,
            found: bytes.len(),
        });
    }
    if bytes.len() > total {
        return Err(PersistError::Corrupt(format!(
            "expected {total} bytes (the length in the header), found more: \
             the file grew while it was read"
        )));
    }
    verify_and_decode(&bytes)
}

/// A whole state file held in memory (a trial's hand-over, made by
/// [`encode`]), checked as [`load`] checks a file.
pub fn decode(bytes: &[u8]) -> Result<Saved, PersistError> {
    if !bytes.starts_with(&MAGIC) {
        return Err(PersistError::NotAStateFile {
            found: describe_foreign(
                bytes.get(..PROBE_LEN).unwrap_or(bytes),
                Some(bytes.len() as u64),
            ),
        });
    }
    match le_u32(bytes, MAGIC.len()) {
        Some(version) if (1..=FORMAT_VERSION).contains(&version) => {}
        Some(found) => {
            return Err(PersistError::UnsupportedVersion {
                expected: FORMAT_VERSION,
                found,
            });
        }
        None => {
            return Err(PersistError::Truncated {
                expected: PREAMBLE_LEN,
                found: bytes.len(),
            });
        }
    }
    let total = le_u64(bytes, 12).and_then(|t| usize::try_from(t).ok());
    if total != Some(bytes.len()) || bytes.len() < MIN_FILE_LEN {
        return Err(PersistError::Corrupt(format!(
            "expected the length in the header to be the {} bytes held, found {total:?}",
            bytes.len()
        )));
    }
    verify_and_decode(bytes)
}

/// The checksum and the body of a file whose length and format version are
/// known to be right.
fn verify_and_decode(bytes: &[u8]) -> Result<Saved, PersistError> {
    let version = le_u32(bytes, MAGIC.len()).unwrap_or(FORMAT_VERSION);
    let body_end = bytes.len() - CHECKSUM_LEN;
    let stored = le_u32(bytes, body_end).unwrap_or_default();
    let computed = crc32(bytes.get(..body_end).unwrap_or_default());
    if stored != computed {
        return Err(PersistError::Corrupt(format!(
            "checksum mismatch: expected {stored:#010x} (stored at byte {body_end}), \
             found {computed:#010x} (computed over the {body_end} bytes before it)"
        )));
    }
    decode_body(
        bytes.get(PREAMBLE_LEN..body_end).unwrap_or_default(),
        version,
    )
    .map_err(PersistError::Corrupt)
}

/// A layout alone, in the state file's encoding: for handing one between
/// processes (an isolated worker's schema).
pub(crate) fn encode_layout_only(layout: &Layout) -> Result<Vec<u8>, String> {
    check_layout(layout, layout.size)?;
    let mut out = Vec::new();
    encode_layout(&mut out, layout)?;
    Ok(out)
}

/// The inverse of [`encode_layout_only`]; checked like a state file's.
pub(crate) fn decode_layout_only(bytes: &[u8]) -> Result<Layout, String> {
    let mut r = Reader { bytes, pos: 0 };
    let layout = decode_layout(&mut r, FORMAT_VERSION)?;
    if r.remaining() != 0 {
        return Err(format!("{} bytes after the layout", r.remaining()));
    }
    check_layout(&layout, layout.size)?;
    Ok(layout)
}

/// Everything before the state's bytes: header and layout.
fn encode_head(saved: &SavedRef<'_>) -> Result<Vec<u8>, PersistError> {
    let refuse = |why: String| {
        PersistError::Corrupt(format!("not written, as it would not load back: {why}"))
    };
    if let Some(layout) = saved.layout {
        check_layout(layout, saved.state.len()).map_err(refuse)?;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + 64);
    out.extend_from_slice(&MAGIC);
    put_u32(&mut out, FORMAT_VERSION);
    put_u64(&mut out, 0); // the file's length, filled in below
    put_u32(&mut out, saved.state_version);
    put_u64(&mut out, saved.state.len() as u64);
    out.push(u8::from(saved.layout.is_some()));
    if let Some(layout) = saved.layout {
        encode_layout(&mut out, layout).map_err(refuse)?;
    }
    let total = out.len() as u64 + saved.state.len() as u64 + CHECKSUM_LEN as u64;
    out[12..PREAMBLE_LEN].copy_from_slice(&total.to_le_bytes());
    Ok(out)
}

fn encode_layout(out: &mut Vec<u8>, layout: &Layout) -> Result<(), String> {
    put_u64(out, layout.size as u64);
    match &layout.source {
        Source::Schema => out.push(0),
        Source::Dwarf {
            type_name,
            chosen_by,
        } => {
            out.push(1);
            put_str(out, type_name)?;
            put_str(out, chosen_by)?;
        }
    }
    put_u64(out, layout.fields.len() as u64);
    for field in &layout.fields {
        put_str(out, &field.name)?;
        put_u64(out, field.offset as u64);
        let (kind, signed, width) = match field.scalar {
            Scalar::Int { signed, bytes } => (1, u8::from(signed), bytes),
            Scalar::Float { bytes } => (2, 0, bytes),
            Scalar::Bool => (3, 0, 1),
            Scalar::Pointer => (4, 0, 8),
        };
        out.extend_from_slice(&[kind, signed, width]);
        put_u64(out, field.count as u64);
        out.push(u8::from(field.transient));
        // `check_layout` has bounded the number of dimensions.
        out.push(field.dims.len() as u8);
        for &d in &field.dims {
            put_u64(out, d as u64);
        }
        match &field.shown {
            Shown::Number => out.push(0),
            Shown::Text => out.push(1),
            Shown::Enum(names) => {
                out.push(2);
                let count = u32::try_from(names.len()).map_err(|_| {
                    format!(
                        "field {}: {} enumerators, expected at most {}",
                        field.name,
                        names.len(),
                        u32::MAX
                    )
                })?;
                put_u32(out, count);
                for e in names.iter() {
                    out.extend_from_slice(&e.value.to_le_bytes());
                    put_str(out, &e.name)?;
                }
            }
        }
    }
    Ok(())
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), String> {
    let len = u32::try_from(s.len()).map_err(|_| {
        format!(
            "a name of {} bytes: expected at most {} bytes",
            s.len(),
            u32::MAX
        )
    })?;
    put_u32(out, len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// The checks a layout must pass to be saved or loaded: it describes a state
/// of the state's size, with known scalar widths, every field inside the
/// state (no arithmetic overflow) and none overlapping.
fn check_layout(layout: &Layout, state_len: usize) -> Result<(), String> {
    if layout.size != state_len {
        return Err(format!(
            "the layout describes a state of {} bytes: expected {state_len} (the state's size)",
            layout.size
        ));
    }
    for field in &layout.fields {
        let width_ok = match field.scalar {
            Scalar::Int { bytes, .. } => matches!(bytes, 1 | 2 | 4 | 8),
            Scalar::Float { bytes } => matches!(bytes, 4 | 8),
            Scalar::Bool | Scalar::Pointer => true,
        };
        if !width_ok {
            let (what, expected) = match field.scalar {
                Scalar::Float { bytes } => (format!("a float of {bytes} bytes"), "4 or 8"),
                other => (
                    format!("an integer of {} bytes", other.size()),
                    "1, 2, 4 or 8",
                ),
            };
            return Err(format!(
                "field {}: expected a width of {expected} bytes, found {what}",
                field.name
            ));
        }
        let end = field
            .scalar
            .size()
            .checked_mul(field.count)
            .and_then(|size| size.checked_add(field.offset));
        match end {
            Some(end) if end <= state_len => {}
            Some(end) => {
                return Err(format!(
                    "field {} ends at byte {end}: expected it within the {state_len}-byte state",
                    field.name
                ));
            }
            None => {
                return Err(format!(
                    "field {}: offset {} and {} elements of {} bytes: expected it within the \
                     {state_len}-byte state, found an end past the largest address",
                    field.name,
                    field.offset,
                    field.count,
                    field.scalar.size()
                ));
            }
        }
    }
    for field in &layout.fields {
        if field.dims.len() > MAX_DIMS {
            return Err(format!(
                "field {}: expected at most {MAX_DIMS} dimensions, found {}",
                field.name,
                field.dims.len()
            ));
        }
        let shown_ok = matches!(
            (&field.shown, field.scalar),
            (Shown::Number, _)
                | (Shown::Text, Scalar::Int { bytes: 1, .. })
                | (Shown::Enum(_), Scalar::Int { .. })
        );
        if !shown_ok {
            return Err(format!(
                "field {}: expected text only for 1-byte integers and enumerators only for \
                 integers, found them for a {}",
                field.name, field.scalar
            ));
        }
    }
    // Every field's end is now known not to overflow.
    layout.validate()
}

/// Reads fields from the bytes between the preamble and the checksum.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The file offset of the next byte, for messages.
    fn at(&self) -> usize {
        PREAMBLE_LEN + self.pos
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end));
        match slice {
            Some(slice) => {
                self.pos += n;
                Ok(slice)
            }
            None => Err(format!(
                "{what} at byte {}: expected {n} bytes, found {} before the checksum",
                self.at(),
                self.remaining()
            )),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let slice = self.take(N, what)?;
        let mut array = [0u8; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn usize(&mut self, what: &str) -> Result<usize, String> {
        let at = self.at();
        let value = self.u64(what)?;
        usize::try_from(value).map_err(|_| {
            format!(
                "{what} at byte {at}: expected at most {}, found {value}",
                usize::MAX
            )
        })
    }

    fn flag(&mut self, what: &str) -> Result<bool, String> {
        let at = self.at();
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!(
                "{what} at byte {at}: expected 0 or 1, found {other}"
            )),
        }
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let at = self.at();
        let len = self.u32(what)? as usize;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| format!("{what} at byte {at}: expected UTF-8, found {e}"))
    }
}

fn decode_body(body: &[u8], version: u32) -> Result<Saved, String> {
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    let state_version = r.u32("the state version")?;
    let state_size = r.usize("the state size")?;
    let layout = if r.flag("the layout flag")? {
        Some(decode_layout(&mut r, version)?)
    } else {
        None
    };
    let state = r.take(state_size, "the state's bytes")?.to_vec();
    if r.remaining() != 0 {
        return Err(format!(
            "expected the checksum right after the state's bytes, found {} more bytes at byte {}",
            r.remaining(),
            r.at()
        ));
    }
    if let Some(layout) = &layout {
        check_layout(layout, state.len())?;
    }
    Ok(Saved {
        state,
        state_version,
        layout,
    })
}

fn decode_layout(r: &mut Reader<'_>, version: u32) -> Result<Layout, String> {
    let size = r.usize("the layout's size")?;
    let at = r.at();
    let source = match r.u8("the layout's source")? {
        0 => Source::Schema,
        1 => Source::Dwarf {
            type_name: r.string("the layout's type name")?,
            chosen_by: r.string("how the layout's type was chosen")?,
        },
        other => {
            return Err(format!(
                "the layout's source at byte {at}: expected 0 (schema) or 1 (debug info), found {other}"
            ));
        }
    };
    let at = r.at();
    let count = r.usize("the field count")?;
    // Checked before allocating: a damaged count fails here, not in malloc.
    let min_field = if version == 1 {
        MIN_FIELD_LEN_V1
    } else {
        MIN_FIELD_LEN
    };
    let most = r.remaining() / min_field;
    if count > most {
        return Err(format!(
            "the field count at byte {at}: expected at most {most} (what the {} bytes left can hold), found {count}",
            r.remaining()
        ));
    }
    let mut fields = Vec::with_capacity(count);
    for index in 0..count {
        let name = r.string("a field's name")?;
        let offset = r.usize("a field's offset")?;
        let at = r.at();
        let [kind, signed, width] = r.array::<3>("a field's type")?;
        let scalar = match (kind, signed, width) {
            (1, 0 | 1, bytes) => Scalar::Int {
                signed: signed == 1,
                bytes,
            },
            (2, 0, bytes) => Scalar::Float { bytes },
            (3, 0, 1) => Scalar::Bool,
            (4, 0, 8) => Scalar::Pointer,
            _ => {
                return Err(format!(
                    "the type of field {index} ({name}) at byte {at}: expected kind 1-4 with a \
                     matching sign and width, found kind {kind}, signed {signed}, width {width}"
                ));
            }
        };
        let count = r.usize("a field's element count")?;
        let transient = r.flag("a field's transient flag")?;
        let (dims, shown) = if version == 1 {
            let dims = if count == 1 { Vec::new() } else { vec![count] };
            (dims, Shown::Number)
        } else {
            decode_shape(r, index, &name)?
        };
        fields.push(Field {
            name,
            offset,
            scalar,
            count,
            dims,
            transient,
            shown,
        });
    }
    Ok(Layout {
        size,
        fields,
        source,
    })
}

/// A version-2 field's dimensions and display, after its transient flag.
fn decode_shape(
    r: &mut Reader<'_>,
    index: usize,
    name: &str,
) -> Result<(Vec<usize>, Shown), String> {
    let at = r.at();
    let rank = r.u8("a field's number of dimensions")? as usize;
    if rank > MAX_DIMS {
        return Err(format!(
            "the number of dimensions of field {index} ({name}) at byte {at}: expected at most \
             {MAX_DIMS}, found {rank}"
        ));
    }
    let dims = (0..rank)
        .map(|_| r.usize("a field's dimension"))
        .collect::<Result<Vec<usize>, String>>()?;
    let at = r.at();
    let shown = match r.u8("how a field is shown")? {
        0 => Shown::Number,
        1 => Shown::Text,
        2 => {
            let at = r.at();
            let count = r.u32("the enumerator count")? as usize;
            let most = r.remaining() / MIN_ENUMERATOR_LEN;
            if count > most {
                return Err(format!(
                    "the enumerator count of field {index} ({name}) at byte {at}: expected at \
                     most {most} (what the {} bytes left can hold), found {count}",
                    r.remaining()
                ));
            }
            let mut names = Vec::with_capacity(count);
            for _ in 0..count {
                let value = i128::from_le_bytes(r.array("an enumerator's value")?);
                let name = r.string("an enumerator's name")?;
                names.push(Enumerator { value, name });
            }
            Shown::Enum(names.into())
        }
        other => {
            return Err(format!(
                "how field {index} ({name}) is shown, at byte {at}: expected 0 (numbers), 1 \
                 (text) or 2 (enumerators), found {other}"
            ));
        }
    };
    Ok((dims, shown))
}

/// What a file that is not a state file looks like, from its first bytes.
fn describe_foreign(probe: &[u8], len: Option<u64>) -> String {
    let size = match len {
        Some(1) => "1 byte".to_owned(),
        Some(n) => format!("{n} bytes"),
        None => "size unknown".to_owned(),
    };
    if probe.is_empty() {
        return format!("an empty file ({size})");
    }
    let text = match std::str::from_utf8(probe) {
        Ok(text) => Some(text),
        // Valid, but the probe cut a character in two.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(probe.get(..e.valid_up_to()).unwrap_or_default()).ok()
        }
        Err(_) => None,
    }
    .filter(|text| {
        text.chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
    });
    let kind = if probe.starts_with(b"\x7fELF") {
        "an ELF file (a program or library)".to_owned()
    } else if probe.starts_with(b"\x1f\x8b") {
        "a gzip file".to_owned()
    } else if probe.starts_with(b"PK\x03\x04") {
        "a zip archive".to_owned()
    } else if probe.starts_with(b"\x89PNG") {
        "a PNG image".to_owned()
    } else if let Some(text) = text {
        let first_line: String = text.lines().next().unwrap_or("").chars().take(40).collect();
        let what = if text.starts_with("#!") {
            "a script"
        } else {
            "a text file"
        };
        format!("{what} starting {first_line:?}")
    } else {
        let hex: Vec<String> = probe.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("binary data starting {}", hex.join(" "))
    };
    format!("{kind} ({size})")
}

#[cfg(test)]
mod tests;
