//! A ready probe takes the page faults of its trial before the trial.
//!
//! A forked child starts with none of its parent's file-backed pages in its
//! page tables (the kernel fills them in at the first touch) and shares
//! every private page with it (the first write to one traps to copy it).
//! A trial touches the loader's code and lists, `malloc`'s heap, the
//! stack and the ELF and DWARF readers: timed in the swap bench, `dlopen`
//! in a probe took 130–170 µs against the host's 78, about 35 µs of it
//! these faults. A ready probe has milliseconds to wait for its orders, so
//! it asks the kernel for those pages now (`MADV_POPULATE_READ` for what it
//! only reads, `MADV_POPULATE_WRITE` for what it may write, which makes its
//! copies now; Linux 5.14), and the trial then finds them mapped.
//!
//! Only pages the helper has are taken (resident, as `mincore` says):
//! populating a mapping's untouched pages would give the probe memory nobody
//! uses. Shared mappings are left alone (neither call changes a byte, but a
//! shared mapping has no copy to make), and so is anything not readable.
//! On an older kernel the calls fail and the trial takes its faults as
//! before.

/// `MADV_POPULATE_READ` and `MADV_POPULATE_WRITE` (Linux 5.14), which the
/// `libc` crate does not name.
const MADV_POPULATE_READ: libc::c_int = 22;
const MADV_POPULATE_WRITE: libc::c_int = 23;
/// A larger mapping is not taken: the helper has none of its own (it never
/// ran plugin code), so such a mapping is no part of what a trial touches.
const LARGEST_MAPPING: usize = 64 << 20;

/// What [`map_ahead`] did.
#[derive(Debug, Default, PartialEq)]
pub struct MappedAhead {
    /// The pages now mapped (for writing, or for reading).
    pub pages: usize,
    /// The mappings that were looked at.
    pub mappings: usize,
}

/// Maps every resident page of this process's private mappings, writable
/// where the mapping is. Failing is harmless (the trial then takes the
/// faults as it goes), so whatever cannot be done is skipped.
pub fn map_ahead() -> MappedAhead {
    let mut done = MappedAhead::default();
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return done;
    };
    let page = page_size();
    for mapping in maps.lines().filter_map(private_mapping) {
        let len = mapping.end.saturating_sub(mapping.start);
        if len == 0 || len > LARGEST_MAPPING || mapping.start % page != 0 {
            continue;
        }
        done.mappings += 1;
        done.pages += populate_resident(mapping.start, len, page, mapping.advice);
    }
    done
}

/// A private mapping from `/proc/self/maps`, and how to populate it.
#[derive(Debug, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
    advice: libc::c_int,
}

/// `start-end rw-p …` → the range and advice, for a readable private
/// mapping.
fn private_mapping(line: &str) -> Option<Mapping> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?.as_bytes();
    if perms.len() < 4 || perms[0] != b'r' || perms[3] != b'p' {
        return None;
    }
    let advice = if perms[1] == b'w' {
        MADV_POPULATE_WRITE
    } else {
        MADV_POPULATE_READ
    };
    let (start, end) = range.split_once('-')?;
    Some(Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        advice,
    })
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096).max(4096)
}

/// Populates, with `advice`, the runs of resident pages in
/// `[start, start + len)`; how many pages it populated.
fn populate_resident(start: usize, len: usize, page: usize, advice: libc::c_int) -> usize {
    let pages = len.div_ceil(page);
    let mut resident = vec![0u8; pages];
    // SAFETY: `mincore` only reads the page tables of a range this process
    // has mapped (from its own maps) and writes one byte per page into a
    // buffer of exactly that many bytes. A range unmapped meanwhile makes
    // it fail with ENOMEM, which is skipped.
    let ok = unsafe { libc::mincore(start as *mut libc::c_void, len, resident.as_mut_ptr()) };
    if ok != 0 {
        return 0;
    }
    let mut populated = 0;
    let mut i = 0;
    while i < pages {
        if resident[i] & 1 == 0 {
            i += 1;
            continue;
        }
        let run = resident[i..].iter().take_while(|r| *r & 1 != 0).count();
        // SAFETY: both advices fault the pages in as a read or a write
        // would and change no byte of them (for a private mapping, a write
        // fault only makes the copy now). The range lies in a private
        // mapping of this process with that access; if it no longer does
        // (unmapped or changed meanwhile) the call fails and nothing
        // happens.
        let done =
            unsafe { libc::madvise((start + i * page) as *mut libc::c_void, run * page, advice) };
        if done == 0 {
            populated += run;
        }
        i += run;
    }
    populated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_readable_mappings_are_taken_writable_ones_for_writing() {
        let line =
            |perms: &str| format!("7f0000000000-7f0000002000 {perms} 00000000 00:00 0 [heap]");
        let mapping = |advice| {
            Some(Mapping {
                start: 0x7f00_0000_0000,
                end: 0x7f00_0000_2000,
                advice,
            })
        };
        assert_eq!(private_mapping(&line("rw-p")), mapping(MADV_POPULATE_WRITE));
        assert_eq!(private_mapping(&line("r-xp")), mapping(MADV_POPULATE_READ));
        assert_eq!(private_mapping(&line("r--p")), mapping(MADV_POPULATE_READ));
        for other in ["rw-s", "r--s", "---p", "-w-p", "rw"] {
            assert_eq!(private_mapping(&line(other)), None, "{other}");
        }
        assert_eq!(private_mapping("garbage"), None);
    }

    #[test]
    fn mapping_ahead_changes_no_byte() {
        // In this process, which shares its pages with nobody: every byte
        // of a written buffer reads the same afterwards, and pages were
        // mapped (the code of this test, at least) where the kernel can.
        let buffer: Vec<u8> = (0..64 * 4096).map(|i| (i % 251) as u8).collect();
        let done = map_ahead();
        assert!(done.mappings > 0, "{done:?}");
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut numbers = release.split(|c: char| !c.is_ascii_digit());
        let version = (
            numbers.next().and_then(|n| n.parse::<u32>().ok()),
            numbers.next().and_then(|n| n.parse::<u32>().ok()),
        );
        if let (Some(major), Some(minor)) = version
            && (major, minor) >= (5, 14)
        {
            assert!(done.pages > 0, "{done:?} on Linux {release}");
        }
        assert!(
            buffer
                .iter()
                .enumerate()
                .all(|(i, b)| *b == (i % 251) as u8)
        );
    }
}
