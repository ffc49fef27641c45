//! Names the code at a faulting address: `counter_tick+0x1a (logic.c:12)`.
//!
//! `dladdr` knows only exported symbols, and plugin functions are usually
//! `static`. So the loader is asked which library holds the address and
//! where it is mapped, and the name comes from that library's full symbol
//! table (`.symtab`, present unless the library was stripped); the source
//! line, when the library was built with debug info (`-g`), from its DWARF.
//! Runs only on the fault path, after the fault, on an ordinary thread stack.

use std::ffi::{CStr, c_void};

use object::{Object, ObjectSymbol, SymbolKind};

/// `name+0xoffset` for the function holding `pc`, or `library+0xoffset`
/// when no symbol covers it.
pub fn describe(pc: usize) -> Option<String> {
    if pc == 0 {
        return None;
    }
    // SAFETY: `Dl_info` is plain data; all-zero is a valid value, which
    // `dladdr` overwrites.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `dladdr` only reads the loader's tables for the address.
    if unsafe { libc::dladdr(pc as *const c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: a non-NULL `dli_fname` is a NUL-terminated string owned by the
    // loader, valid while the library stays loaded (it is: the caller
    // symbolizes before unloading).
    let path = unsafe { CStr::from_ptr(info.dli_fname) }
        .to_string_lossy()
        .into_owned();
    let address = pc.wrapping_sub(info.dli_fbase as usize) as u64;
    if let Some(found) = from_symbol_table(&path, address) {
        return Some(match source_line(&path, address) {
            Some(line) => format!("{found} ({line})"),
            None => found,
        });
    }
    if !info.dli_sname.is_null() {
        // SAFETY: as for `dli_fname`.
        let name = unsafe { CStr::from_ptr(info.dli_sname) }.to_string_lossy();
        return Some(format!(
            "{name}+{:#x}",
            pc.wrapping_sub(info.dli_saddr as usize)
        ));
    }
    let file = path.rsplit('/').next().unwrap_or(&path);
    Some(format!("{file}+{address:#x}"))
}

/// The function in `path`'s symbol tables whose range holds `address` (an
/// address as the library was linked, i.e. relative to its load base).
fn from_symbol_table(path: &str, address: u64) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let file = object::File::parse(&*bytes).ok()?;
    file.symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.is_definition())
        .find(|s| s.address() <= address && address < s.address() + s.size().max(1))
        .and_then(|s| Some(format!("{}+{:#x}", s.name().ok()?, address - s.address())))
}

/// `logic.c:12` from the library's DWARF line table, if it has one.
fn source_line(path: &str, address: u64) -> Option<String> {
    let loader = addr2line::Loader::new(path).ok()?;
    let location = loader.find_location(address).ok()??;
    let file = location.file?;
    let name = file.rsplit('/').next().unwrap_or(file);
    Some(match location.line {
        Some(line) => format!("{name}:{line}"),
        None => name.to_owned(),
    })
}
