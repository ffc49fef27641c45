//! Notes (`PT_NOTE`, `PT_GNU_PROPERTY`): the loader walks them in memory,
//! right after mapping, for the GNU property note (x86 ISA levels and
//! control-flow protection), trusting every size it reads. Each note must
//! end inside its segment, and the property array inside its note.

use super::segments::{Layout, PT_GNU_PROPERTY, PT_NOTE, Phdr};
use super::u32_at;

/// `NT_GNU_PROPERTY_TYPE_0`.
const NT_GNU_PROPERTY: u32 = 5;

pub(super) fn check(bytes: &[u8], phdrs: &[Phdr], layout: &Layout) -> Result<(), String> {
    for ph in phdrs
        .iter()
        .filter(|p| p.kind == PT_NOTE || p.kind == PT_GNU_PROPERTY)
    {
        let name = ph.name();
        if ph.memsz == 0 {
            continue;
        }
        let notes = layout
            .file_bytes(bytes, ph.vaddr, ph.memsz)
            .map_err(|found| {
                format!("{name}: expected its notes inside a loaded segment's file bytes, {found}")
            })?;
        // Notes are padded to the segment's alignment: 8 for the property
        // note, 4 for the rest (build id, ABI tag).
        let align: u64 = if ph.align == 8 { 8 } else { 4 };
        let pad = |n: u64| n.div_ceil(align) * align;
        let len = notes.len() as u64;
        let mut at = 0u64;
        let mut index = 0;
        while at + 12 <= len {
            let (Some(namesz), Some(descsz), Some(kind)) = (
                u32_at(notes, at),
                u32_at(notes, at + 4),
                u32_at(notes, at + 8),
            ) else {
                break;
            };
            // As the loader steps: the descriptor and the next note each
            // start at the alignment, counted from this note's start.
            let desc_at = at + pad(12 + u64::from(namesz));
            let next = at + pad(desc_at - at + u64::from(descsz));
            if next > len {
                return Err(format!(
                    "{name} note {index} at +{at:#x}: expected its name and descriptor (n_namesz {namesz}, n_descsz {descsz}) inside the segment's {len:#x} bytes, found them ending at +{next:#x}"
                ));
            }
            let owner = super::slice(notes, at + 12, u64::from(namesz));
            if kind == NT_GNU_PROPERTY && owner == Some(b"GNU\0".as_slice()) {
                check_properties(&name, index, notes, desc_at, u64::from(descsz))?;
            }
            at = next;
            index += 1;
        }
    }
    Ok(())
}

/// The property array of a GNU property note: 8-byte aligned entries of
/// (type, size, data), each inside the descriptor.
fn check_properties(
    name: &str,
    index: usize,
    notes: &[u8],
    start: u64,
    size: u64,
) -> Result<(), String> {
    if !size.is_multiple_of(8) {
        return Err(format!(
            "{name} note {index}: expected a GNU property array of a multiple of 8 bytes, found n_descsz {size}"
        ));
    }
    let end = start + size;
    let mut at = start;
    while at + 8 <= end {
        let (Some(kind), Some(datasz)) = (u32_at(notes, at), u32_at(notes, at + 4)) else {
            break;
        };
        let next = at + 8 + u64::from(datasz).div_ceil(8) * 8;
        if next > end {
            return Err(format!(
                "{name} note {index}: expected property {kind:#x} (pr_datasz {datasz}) inside the note's {size} bytes, found it ending {} bytes past them",
                next - end
            ));
        }
        at = next;
    }
    Ok(())
}
