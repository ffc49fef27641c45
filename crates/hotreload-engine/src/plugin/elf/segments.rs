//! Program headers: what the loader maps where (`PT_LOAD`), and the headers
//! it reads once the segments are in place (`PT_DYNAMIC`, `PT_PHDR`,
//! `PT_TLS`, `PT_GNU_RELRO`, `PT_GNU_STACK`, `PT_GNU_EH_FRAME`).
//!
//! The loader reaches everything else through addresses, in memory. So the
//! validator reads through the same addresses, translated by the `PT_LOAD`
//! that maps them back to the file bytes that will be there: [`Layout`].

use super::{u32_at, u64_at};
use crate::plugin::elf::header::Header;

pub(super) const PT_LOAD: u32 = 1;
pub(super) const PT_DYNAMIC: u32 = 2;
pub(super) const PT_NOTE: u32 = 4;
pub(super) const PT_PHDR: u32 = 6;
pub(super) const PT_TLS: u32 = 7;
pub(super) const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
pub(super) const PT_GNU_STACK: u32 = 0x6474_e551;
pub(super) const PT_GNU_RELRO: u32 = 0x6474_e552;
pub(super) const PT_GNU_PROPERTY: u32 = 0x6474_e553;

const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

/// Past this a library is not a plugin: a gigabyte of address space.
const MAX_IMAGE: u64 = 1 << 30;
/// A thread-local block the loader would allocate for every thread.
const MAX_TLS: u64 = 16 << 20;
const MAX_TLS_ALIGN: u64 = 64 << 10;

/// One program header, as read.
#[derive(Clone, Debug)]
pub(super) struct Phdr {
    pub index: usize,
    pub kind: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

impl Phdr {
    /// `PT_LOAD (program header 3)`, `PT_TLS (program header 6)`.
    pub fn name(&self) -> String {
        let kind = match self.kind {
            PT_LOAD => "PT_LOAD",
            PT_DYNAMIC => "PT_DYNAMIC",
            PT_NOTE => "PT_NOTE",
            PT_PHDR => "PT_PHDR",
            PT_TLS => "PT_TLS",
            PT_GNU_EH_FRAME => "PT_GNU_EH_FRAME",
            PT_GNU_STACK => "PT_GNU_STACK",
            PT_GNU_RELRO => "PT_GNU_RELRO",
            PT_GNU_PROPERTY => "PT_GNU_PROPERTY",
            _ => "segment",
        };
        format!("{kind} (program header {})", self.index)
    }
}

pub(super) fn program_headers(bytes: &[u8], header: &Header) -> Result<Vec<Phdr>, String> {
    (0..header.phnum)
        .map(|i| {
            let at = header.phoff + i * 56;
            let field = |off: u64| u64_at(bytes, at + off);
            match (
                u32_at(bytes, at),
                u32_at(bytes, at + 4),
                field(8),
                field(16),
                field(32),
                field(40),
                field(48),
            ) {
                (
                    Some(kind),
                    Some(flags),
                    Some(offset),
                    Some(vaddr),
                    Some(filesz),
                    Some(memsz),
                    Some(align),
                ) => Ok(Phdr {
                    index: i as usize,
                    kind,
                    flags,
                    offset,
                    vaddr,
                    filesz,
                    memsz,
                    align,
                }),
                _ => Err(format!(
                    "truncated: expected program header {i} inside the file, found a file of {} bytes",
                    bytes.len()
                )),
            }
        })
        .collect()
}

/// A `PT_LOAD`, checked: `[vaddr, vaddr + memsz)` in memory, its first
/// `filesz` bytes from the file at `offset`.
#[derive(Clone, Debug)]
pub(super) struct Segment {
    pub name: String,
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub flags: u32,
}

impl Segment {
    pub fn writable(&self) -> bool {
        self.flags & PF_W != 0
    }
}

/// The loadable segments, in address order, and the address translation.
pub(super) struct Layout {
    pub loads: Vec<Segment>,
}

/// The system's page size: what the loader maps in.
pub(super) fn page_size() -> u64 {
    // SAFETY: `sysconf` has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

impl Layout {
    /// Checks every `PT_LOAD` as `_dl_map_object_from_fd` and
    /// `_dl_map_segments` use them: aligned, inside the file, in ascending
    /// order without overlapping (the loader reserves the span from the
    /// first to the last and maps each one at a fixed address inside it: a
    /// segment out of order lands on whatever else is mapped there).
    pub fn new(phdrs: &[Phdr], file_len: u64) -> Result<Layout, String> {
        let page = page_size();
        let mut loads: Vec<Segment> = Vec::new();
        for ph in phdrs.iter().filter(|p| p.kind == PT_LOAD) {
            let name = format!("PT_LOAD {} (program header {})", loads.len(), ph.index);
            if !ph.align.is_power_of_two() || ph.align < page || ph.align > MAX_IMAGE {
                return Err(format!(
                    "{name}: expected p_align a power of two between the page size {page:#x} and {MAX_IMAGE:#x}, found {:#x}",
                    ph.align
                ));
            }
            if ph.vaddr % ph.align != ph.offset % ph.align {
                return Err(format!(
                    "{name}: expected p_vaddr and p_offset equal modulo p_align {:#x}, found p_vaddr {:#x} and p_offset {:#x}",
                    ph.align, ph.vaddr, ph.offset
                ));
            }
            if ph.filesz > ph.memsz {
                return Err(format!(
                    "{name}: expected p_filesz at most p_memsz {:#x}, found {:#x}",
                    ph.memsz, ph.filesz
                ));
            }
            // The loader reads its tables, and the unwinder and symbolizer
            // the code, where they are mapped.
            if ph.flags & PF_R == 0 {
                return Err(format!(
                    "{name}: expected a readable segment (PF_R in p_flags), found p_flags {:#x}",
                    ph.flags
                ));
            }
            let file_end = ph.offset.checked_add(ph.filesz);
            if file_end.is_none_or(|end| end > file_len) {
                return Err(format!(
                    "truncated: {name}: expected its file bytes {:#x}..{} (p_offset, p_filesz) inside the file, found a file of {file_len} bytes",
                    ph.offset,
                    file_end.map_or("past 2^64".into(), |e| format!("{e:#x}"))
                ));
            }
            let end = ph.vaddr.checked_add(ph.memsz);
            if end.is_none_or(|end| end > MAX_IMAGE * 64) {
                return Err(format!(
                    "{name}: expected its addresses below {:#x}, found {:#x}..{} (p_vaddr, p_memsz)",
                    MAX_IMAGE * 64,
                    ph.vaddr,
                    end.map_or("past 2^64".into(), |e| format!("{e:#x}"))
                ));
            }
            if let Some(prev) = loads.last() {
                let prev_end = prev.vaddr + prev.memsz;
                let prev_page_end = align_up(prev_end, page).unwrap_or(u64::MAX);
                if ph.vaddr & !(page - 1) < prev_page_end {
                    return Err(format!(
                        "{name}: expected it to start at or after {prev_page_end:#x}, the page after {} ends, found p_vaddr {:#x} (segments must ascend without sharing a page)",
                        prev.name, ph.vaddr
                    ));
                }
            }
            loads.push(Segment {
                name,
                vaddr: ph.vaddr,
                memsz: ph.memsz,
                offset: ph.offset,
                filesz: ph.filesz,
                flags: ph.flags,
            });
        }
        let (Some(first), Some(last)) = (loads.first(), loads.last()) else {
            return Err("expected at least one PT_LOAD program header, found none".into());
        };
        let span = (last.vaddr + last.memsz) - (first.vaddr & !(page - 1));
        if span > MAX_IMAGE {
            return Err(format!(
                "expected the segments to span at most {MAX_IMAGE:#x} bytes, found {span:#x}"
            ));
        }
        Ok(Layout { loads })
    }

    /// The segment whose memory holds all of `[vaddr, vaddr + len)`.
    pub fn in_memory(&self, vaddr: u64, len: u64) -> Option<&Segment> {
        let end = vaddr.checked_add(len)?;
        self.loads
            .iter()
            .find(|s| s.vaddr <= vaddr && end <= s.vaddr + s.memsz)
    }

    /// The file bytes the loader will have mapped at `[vaddr, vaddr + len)`:
    /// all of them must come from one segment's file part. `Err` describes
    /// where the range lies instead, for the caller's message.
    pub fn file_bytes<'a>(
        &self,
        bytes: &'a [u8],
        vaddr: u64,
        len: u64,
    ) -> Result<&'a [u8], String> {
        let Some(end) = vaddr.checked_add(len) else {
            return Err(format!("found {vaddr:#x} + {len:#x}, past 2^64"));
        };
        let Some(seg) = self
            .loads
            .iter()
            .find(|s| s.vaddr <= vaddr && vaddr < s.vaddr + s.memsz.max(1))
        else {
            return Err(format!(
                "found {vaddr:#x}..{end:#x}, outside every loaded segment"
            ));
        };
        if end > seg.vaddr + seg.filesz {
            return Err(format!(
                "found {vaddr:#x}..{end:#x}, past the file bytes of {} (they end at {:#x})",
                seg.name,
                seg.vaddr + seg.filesz
            ));
        }
        super::slice(bytes, seg.offset + (vaddr - seg.vaddr), len)
            .ok_or_else(|| format!("found {vaddr:#x}..{end:#x}, past the end of the file"))
    }

    /// The file bytes from `vaddr` to the end of its segment's file part:
    /// for a table whose length is not known before it is read.
    pub fn file_rest<'a>(&self, bytes: &'a [u8], vaddr: u64) -> Option<&'a [u8]> {
        let seg = self
            .loads
            .iter()
            .find(|s| s.vaddr <= vaddr && vaddr < s.vaddr + s.filesz)?;
        super::slice(
            bytes,
            seg.offset + (vaddr - seg.vaddr),
            seg.vaddr + seg.filesz - vaddr,
        )
    }

    /// The file offset of `vaddr`, which must be in a segment's file part.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|s| s.vaddr <= vaddr && vaddr < s.vaddr + s.filesz)
            .map(|s| s.offset + (vaddr - s.vaddr))
    }

    /// Whether `[vaddr, vaddr + len)` is file-backed code (`PF_X`).
    pub fn is_code(&self, vaddr: u64, len: u64) -> bool {
        vaddr.checked_add(len).is_some_and(|end| {
            self.loads
                .iter()
                .any(|s| s.flags & PF_X != 0 && s.vaddr <= vaddr && end <= s.vaddr + s.filesz)
        })
    }

    /// Where `vaddr` is, in words, for a message.
    pub fn describe(&self, vaddr: u64) -> String {
        match self.in_memory(vaddr, 1) {
            Some(s) => format!(
                "{vaddr:#x} (in {}, {})",
                s.name,
                match (s.flags & PF_X != 0, s.writable()) {
                    (true, _) => "executable",
                    (false, true) => "writable data",
                    (false, false) => "read-only data",
                }
            ),
            None => format!("{vaddr:#x} (outside every loaded segment)"),
        }
    }

    pub fn spans(&self) -> Vec<(u64, u64)> {
        self.loads
            .iter()
            .map(|s| (s.vaddr, s.vaddr + s.memsz))
            .collect()
    }

    pub fn code(&self) -> Vec<(u64, u64)> {
        self.loads
            .iter()
            .filter(|s| s.flags & PF_X != 0)
            .map(|s| (s.vaddr, s.vaddr + s.filesz))
            .collect()
    }

    /// From the lowest to the highest address of the image.
    pub fn bounds(&self) -> (u64, u64) {
        let start = self.loads.first().map_or(0, |s| s.vaddr);
        let end = self.loads.last().map_or(0, |s| s.vaddr + s.memsz);
        (start, end)
    }
}

/// What the other program headers say, once checked.
pub(super) struct Special {
    /// The dynamic section: its address and size, as linked.
    pub dynamic: (u64, u64),
    /// Where the program headers are in memory, when they are mapped
    /// (the loader and every `dl_iterate_phdr` caller read them there).
    pub phdrs_in_memory: Option<(&'static str, u64, u64)>,
    pub has_tls: bool,
}

/// Checks the program headers other than `PT_LOAD` that the loader uses.
pub(super) fn check_special(
    bytes: &[u8],
    header: &Header,
    phdrs: &[Phdr],
    layout: &Layout,
) -> Result<Special, String> {
    let only_one = |kind: u32| -> Result<Option<&Phdr>, String> {
        let mut found = phdrs.iter().filter(|p| p.kind == kind);
        let first = found.next();
        if let (Some(first), Some(second)) = (first, found.next()) {
            return Err(format!(
                "expected one {}, found another in program header {}",
                first.name(),
                second.index
            ));
        }
        Ok(first)
    };
    let Some(dynamic) = only_one(PT_DYNAMIC)? else {
        return Err("expected a PT_DYNAMIC program header, found none".into());
    };
    let size = dynamic.filesz.min(dynamic.memsz);
    if size < 16 {
        return Err(format!(
            "{}: expected at least one 16-byte entry (p_filesz and p_memsz), found {:#x} and {:#x}",
            dynamic.name(),
            dynamic.filesz,
            dynamic.memsz
        ));
    }
    if let Err(found) = layout.file_bytes(bytes, dynamic.vaddr, size) {
        return Err(format!(
            "{}: expected its entries inside a loaded segment's file bytes, {found}",
            dynamic.name()
        ));
    }
    let table = header.phnum * 56;
    let mut phdrs_in_memory = None;
    if let Some(phdr) = only_one(PT_PHDR)? {
        // The loader takes the program headers from this address; so does
        // every `dl_iterate_phdr` caller (unwinders) for as long as the
        // library stays loaded.
        let at = layout.file_offset(phdr.vaddr);
        if at != Some(header.phoff) || layout.file_bytes(bytes, phdr.vaddr, table).is_err() {
            return Err(format!(
                "{}: expected p_vaddr to map the program headers (file offset {:#x}, {table:#x} bytes), found {}",
                phdr.name(),
                header.phoff,
                match at {
                    Some(at) => format!("{:#x}, which maps file offset {at:#x}", phdr.vaddr),
                    None => layout.describe(phdr.vaddr),
                }
            ));
        }
        phdrs_in_memory = Some(("the program headers", phdr.vaddr, table));
    } else if let Some(seg) = layout
        .loads
        .iter()
        .find(|s| s.offset <= header.phoff && header.phoff + table <= s.offset + s.filesz)
    {
        phdrs_in_memory = Some((
            "the program headers",
            seg.vaddr + (header.phoff - seg.offset),
            table,
        ));
    }
    let tls = only_one(PT_TLS)?;
    if let Some(tls) = tls {
        if tls.filesz > tls.memsz {
            // The loader copies p_filesz bytes into every thread's block of
            // p_memsz: a heap overflow in each thread.
            return Err(format!(
                "{}: expected p_filesz at most p_memsz {:#x}, found {:#x}",
                tls.name(),
                tls.memsz,
                tls.filesz
            ));
        }
        if tls.memsz > MAX_TLS {
            return Err(format!(
                "{}: expected a thread-local block of at most {MAX_TLS:#x} bytes (p_memsz), found {:#x}",
                tls.name(),
                tls.memsz
            ));
        }
        if tls.align > 1 && (!tls.align.is_power_of_two() || tls.align > MAX_TLS_ALIGN) {
            return Err(format!(
                "{}: expected p_align 0, 1 or a power of two up to {MAX_TLS_ALIGN:#x}, found {:#x}",
                tls.name(),
                tls.align
            ));
        }
        if tls.filesz > 0
            && let Err(found) = layout.file_bytes(bytes, tls.vaddr, tls.filesz)
        {
            return Err(format!(
                "{}: expected its initial image (p_vaddr, p_filesz) inside a loaded segment's file bytes, {found}",
                tls.name()
            ));
        }
    }
    if let Some(relro) = only_one(PT_GNU_RELRO)? {
        // Made read-only after relocation: outside the library, that would
        // be some other mapping of the host.
        if !layout
            .in_memory(relro.vaddr, relro.memsz)
            .is_some_and(Segment::writable)
        {
            return Err(format!(
                "{}: expected it inside a writable PT_LOAD, found {:#x}..{:#x} at {}",
                relro.name(),
                relro.vaddr,
                relro.vaddr.saturating_add(relro.memsz),
                layout.describe(relro.vaddr)
            ));
        }
    }
    match only_one(PT_GNU_STACK)? {
        Some(stack) if stack.flags & PF_X != 0 => {
            return Err(format!(
                "{}: expected a non-executable stack, found p_flags {:#x} with PF_X: loading it would make every thread's stack executable (an assembly file without .note.GNU-stack?)",
                stack.name(),
                stack.flags
            ));
        }
        Some(_) => {}
        None => {
            return Err(
                "expected a PT_GNU_STACK program header (a non-executable stack), found none: without it the loader makes every thread's stack executable"
                    .into(),
            );
        }
    }
    if let Some(eh) = only_one(PT_GNU_EH_FRAME)?
        && let Err(found) = layout.file_bytes(bytes, eh.vaddr, eh.memsz.max(1))
    {
        return Err(format!(
            "{}: expected the unwind table inside a loaded segment's file bytes, {found}",
            eh.name()
        ));
    }
    Ok(Special {
        dynamic: (dynamic.vaddr, size),
        phdrs_in_memory,
        has_tls: tls.is_some_and(|t| t.memsz > 0),
    })
}
