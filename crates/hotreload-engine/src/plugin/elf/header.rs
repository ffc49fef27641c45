//! The ELF header, as `open_verify` reads it, and the section table, which
//! the loader never reads but the host's other readers (symbols for fault
//! reports, debug info for the state's layout) do.

use super::{slice, u16_at, u32_at, u64_at};

/// Program headers the loader copies onto its stack: more than any real
/// library has (a dozen), few enough to be harmless there.
const MAX_PROGRAM_HEADERS: u64 = 128;

/// What the rest of the validation needs from the header.
pub(super) struct Header {
    pub phoff: u64,
    pub phnum: u64,
}

/// The machine this host runs, as `e_machine` names it.
const HOST_MACHINE: (u16, &str) = if cfg!(target_arch = "x86_64") {
    (62, "x86-64")
} else if cfg!(target_arch = "aarch64") {
    (183, "AArch64")
} else if cfg!(target_arch = "riscv64") {
    (243, "RISC-V")
} else {
    (0, "this machine")
};

fn machine_name(machine: u16) -> String {
    match machine {
        3 => "i386".into(),
        8 => "MIPS".into(),
        20 => "PowerPC".into(),
        21 => "PowerPC64".into(),
        40 => "ARM".into(),
        62 => "x86-64".into(),
        183 => "AArch64".into(),
        243 => "RISC-V".into(),
        other => format!("machine {other}"),
    }
}

pub(super) fn read(bytes: &[u8]) -> Result<Header, String> {
    let len = bytes.len();
    let Some(ident) = slice(bytes, 0, 16) else {
        return Err(format!(
            "truncated: expected the 64-byte ELF header, found a file of {len} bytes"
        ));
    };
    let (class, data, version, osabi, abiversion) =
        (ident[4], ident[5], ident[6], ident[7], ident[8]);
    if class != 2 {
        return Err(format!(
            "expected a 64-bit {} library (EI_CLASS 2), found {}",
            HOST_MACHINE.1,
            match class {
                1 => "a 32-bit one (EI_CLASS 1)".to_owned(),
                other => format!("EI_CLASS {other}"),
            }
        ));
    }
    if data != 1 {
        return Err(format!(
            "expected a little-endian library (EI_DATA 1), found EI_DATA {data}"
        ));
    }
    if version != 1 {
        return Err(format!("expected EI_VERSION 1, found {version}"));
    }
    // SysV or GNU/Linux; the loader accepts a non-zero ABI version only
    // for GNU, and only the ones it knows (up to 3: absolute symbols).
    if !(osabi == 0 && abiversion == 0 || osabi == 3 && abiversion <= 3) {
        return Err(format!(
            "expected EI_OSABI 0 (SysV) or 3 (GNU) with a known EI_ABIVERSION, found EI_OSABI {osabi}, EI_ABIVERSION {abiversion}"
        ));
    }
    if let Some(at) = ident[9..].iter().position(|&b| b != 0) {
        return Err(format!(
            "expected zero padding in e_ident, found {:#04x} at byte {}",
            ident[9 + at],
            9 + at
        ));
    }
    let field16 = |at: u64| u16_at(bytes, at);
    let (Some(e_type), Some(machine), Some(e_version)) =
        (field16(0x10), field16(0x12), u32_at(bytes, 0x14))
    else {
        return Err(format!(
            "truncated: expected the 64-byte ELF header, found a file of {len} bytes"
        ));
    };
    if e_type != 3 {
        return Err(format!(
            "expected a shared object (ET_DYN), found {} (was it linked with -shared?)",
            match e_type {
                1 => "a relocatable object file".to_owned(),
                2 => "an executable".to_owned(),
                4 => "a core dump".to_owned(),
                other => format!("an ELF file of type {other}"),
            }
        ));
    }
    if machine != HOST_MACHINE.0 {
        return Err(format!(
            "expected a 64-bit {} library, found a 64-bit {} one",
            HOST_MACHINE.1,
            machine_name(machine)
        ));
    }
    if e_version != 1 {
        return Err(format!("expected e_version 1, found {e_version}"));
    }
    let (Some(phoff), Some(ehsize), Some(phentsize), Some(phnum)) = (
        u64_at(bytes, 0x20),
        field16(0x34),
        field16(0x36),
        field16(0x38),
    ) else {
        return Err(format!(
            "truncated: expected the 64-byte ELF header, found a file of {len} bytes"
        ));
    };
    if ehsize != 64 {
        return Err(format!("expected e_ehsize 64, found {ehsize}"));
    }
    if phentsize != 56 {
        return Err(format!(
            "expected e_phentsize 56 (the size of a program header), found {phentsize}"
        ));
    }
    let phnum = u64::from(phnum);
    if phnum == 0 || phnum > MAX_PROGRAM_HEADERS {
        return Err(format!(
            "expected e_phnum between 1 and {MAX_PROGRAM_HEADERS}, found {phnum}"
        ));
    }
    if !phoff.is_multiple_of(8) {
        return Err(format!(
            "expected e_phoff to be a multiple of 8, found {phoff:#x}"
        ));
    }
    let end = phoff.checked_add(phnum * 56);
    if end.is_none_or(|end| end > len as u64) {
        return Err(format!(
            "truncated: expected the {phnum} program headers at bytes {phoff:#x}..{} (e_phoff, e_phnum), found a file of {len} bytes",
            end.map_or("past 2^64".into(), |e| format!("{e:#x}"))
        ));
    }
    Ok(Header { phoff, phnum })
}

/// The section table and every section's bytes lie inside the file. The
/// loader ignores sections; the host's symbolizer and debug-info reader do
/// not, and a table past the end is the usual sign of a truncated file.
pub(super) fn check_sections(bytes: &[u8]) -> Result<(), String> {
    let len = bytes.len() as u64;
    let (Some(shoff), Some(shentsize), Some(shnum), Some(shstrndx)) = (
        u64_at(bytes, 0x28),
        u16_at(bytes, 0x3a),
        u16_at(bytes, 0x3c),
        u16_at(bytes, 0x3e),
    ) else {
        return Err(format!(
            "truncated: expected the 64-byte ELF header, found a file of {len} bytes"
        ));
    };
    let shnum = u64::from(shnum);
    if shnum == 0 {
        if shoff != 0 {
            return Err(format!(
                "expected e_shnum to count the sections at e_shoff {shoff:#x}, found 0 (extended numbering is not supported)"
            ));
        }
        return Ok(());
    }
    if shentsize != 64 {
        return Err(format!(
            "expected e_shentsize 64 (the size of a section header), found {shentsize}"
        ));
    }
    let table_end = shoff.checked_add(shnum * 64);
    if table_end.is_none_or(|end| end > len) {
        return Err(format!(
            "truncated: expected the {shnum} section headers at bytes {shoff:#x}..{} (e_shoff, e_shnum), found a file of {len} bytes",
            table_end.map_or("past 2^64".into(), |e| format!("{e:#x}"))
        ));
    }
    if u64::from(shstrndx) >= shnum {
        return Err(format!(
            "expected e_shstrndx below e_shnum {shnum}, found {shstrndx}"
        ));
    }
    let header = |i: u64| shoff + i * 64;
    let names = (
        u64_at(bytes, header(u64::from(shstrndx)) + 0x18),
        u64_at(bytes, header(u64::from(shstrndx)) + 0x20),
    );
    let name_of = |i: u64| -> String {
        let (Some(at), Some(size), Some(name)) = (names.0, names.1, u32_at(bytes, header(i)))
        else {
            return format!("{i}");
        };
        let found = (u64::from(name) < size)
            .then(|| slice(bytes, at + u64::from(name), size - u64::from(name)))
            .flatten()
            .and_then(super::c_string);
        match found {
            Some(n) if !n.is_empty() => format!("{i} ({})", super::show(n)),
            _ => format!("{i}"),
        }
    };
    for i in 1..shnum {
        let h = header(i);
        let (Some(kind), Some(offset), Some(size)) = (
            u32_at(bytes, h + 4),
            u64_at(bytes, h + 0x18),
            u64_at(bytes, h + 0x20),
        ) else {
            continue; // inside the table, checked above
        };
        // SHT_NOBITS (.bss, .tbss) takes no bytes of the file.
        if kind == 8 {
            continue;
        }
        let end = offset.checked_add(size);
        if end.is_none_or(|end| end > len) {
            return Err(format!(
                "truncated: expected section {} at bytes {offset:#x}..{}, found a file of {len} bytes",
                name_of(i),
                end.map_or("past 2^64".into(), |e| format!("{e:#x}"))
            ));
        }
    }
    Ok(())
}
