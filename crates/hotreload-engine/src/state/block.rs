//! The state block the host owns on the plugin's behalf.
//!
//! It is allocated once, at the first successful load, zeroed and aligned to a
//! cache line, and it outlives every version of the plugin. Plugins only ever
//! see a raw pointer to it.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Alignment of the state block: a cache line, and enough for any C type
/// including AVX-512 vectors.
pub const STATE_ALIGN: usize = 64;

pub struct State {
    ptr: NonNull<u8>,
    /// The size the plugin asked for (may be 0).
    size: usize,
    layout: Layout,
}

// SAFETY: `State` owns its allocation exclusively (like a `Box<[u8]>`); nothing
// else holds the pointer between plugin calls, so moving it to another thread
// is sound.
unsafe impl Send for State {}

impl State {
    /// Allocates `size` zeroed bytes. Fails only when the size cannot be
    /// represented or the allocator refuses, both reported, never aborting.
    pub fn zeroed(size: usize) -> Result<State, String> {
        // A zero-size plugin still gets a valid, unique pointer.
        let layout = Layout::from_size_align(size.max(1), STATE_ALIGN)
            .map_err(|_| format!("state_size {size} is too large to allocate"))?;
        // SAFETY: `layout` has a non-zero size, as `alloc_zeroed` requires.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr =
            NonNull::new(raw).ok_or_else(|| format!("could not allocate {size} bytes of state"))?;
        Ok(State { ptr, size, layout })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The pointer handed to plugin code.
    pub fn as_mut_ptr(&mut self) -> *mut std::ffi::c_void {
        self.ptr.as_ptr().cast()
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size() >= size` initialized (zeroed,
        // then written only through plugin calls that `&mut self` serializes)
        // bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.size) }
    }
}

impl State {
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.size) }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this same `layout`.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_and_aligned() {
        for size in [0, 1, 4, 63, 64, 4096] {
            let mut s = State::zeroed(size).expect("allocate");
            assert_eq!(s.as_mut_ptr() as usize % STATE_ALIGN, 0);
            assert_eq!(s.bytes().len(), size);
            assert!(s.bytes().iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn absurd_size_is_an_error_not_an_abort() {
        assert!(State::zeroed(usize::MAX - 10).is_err());
    }
}
