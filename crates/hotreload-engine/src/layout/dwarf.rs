//! Placeholder: the DWARF reader.
