//! Calling any function of a host's table under the crash guard.
//!
//! The guard's trampoline (`guard/trampoline.c`, `hr_call_words`) passes up
//! to five integer or pointer arguments in registers and hands back the
//! integer return register, with no Rust frame between the jump target and
//! plugin code. [`GuardedFn`] is implemented for `extern "C"` function
//! pointers of that shape (0 to 5 arguments of [`Word`] types, a result of
//! a [`FromWord`] type or none), so a table's `handle: Option<unsafe extern
//! "C" fn(*const Request, *mut Response) -> i32>` is called as it is
//! declared. Floating-point arguments or results, and structs passed by
//! value, do not fit the trampoline: the types do not implement the traits,
//! so such a call does not compile. Pass a pointer instead.

use std::ffi::c_void;

/// An argument the trampoline passes in an integer register.
pub trait Word: Copy {
    fn to_word(self) -> u64;
}

/// A result read from the integer return register.
pub trait FromWord {
    fn from_word(word: u64) -> Self;
}

macro_rules! words {
    ($($t:ty),*) => {$(
        impl Word for $t {
            #[inline(always)]
            fn to_word(self) -> u64 {
                // Sign- or zero-extended as the C ABI's callers do.
                self as i64 as u64
            }
        }
        impl FromWord for $t {
            #[inline(always)]
            fn from_word(word: u64) -> $t {
                // Only the low bits of a narrower result are defined.
                word as $t
            }
        }
    )*};
}
words!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

impl Word for bool {
    #[inline(always)]
    fn to_word(self) -> u64 {
        u64::from(self)
    }
}

impl FromWord for bool {
    #[inline(always)]
    fn from_word(word: u64) -> bool {
        word as u8 != 0
    }
}

impl FromWord for () {
    #[inline(always)]
    fn from_word(_: u64) {}
}

impl<T> Word for *const T {
    #[inline(always)]
    fn to_word(self) -> u64 {
        self as usize as u64
    }
}

impl<T> Word for *mut T {
    #[inline(always)]
    fn to_word(self) -> u64 {
        self as usize as u64
    }
}

impl<T> FromWord for *const T {
    #[inline(always)]
    fn from_word(word: u64) -> *const T {
        word as usize as *const T
    }
}

impl<T> FromWord for *mut T {
    #[inline(always)]
    fn from_word(word: u64) -> *mut T {
        word as usize as *mut T
    }
}

/// A plugin function the trampoline can call: `Args` is the tuple of its
/// arguments.
///
/// # Safety
/// Implemented only for `extern "C"` function pointers whose arguments and
/// result are passed in integer registers (see the module's text).
pub unsafe trait GuardedFn<Args>: Copy {
    type Output;
    /// The function's address.
    fn address(self) -> *const c_void;
    /// The arguments in the registers' order, unused ones zero.
    fn words(args: Args) -> [u64; 5];
}

macro_rules! guarded_fn {
    ($($a:ident $i:tt),*) => {
        guarded_fn!(@for [unsafe extern "C" fn($($a),*) -> R] $($a $i),*);
        guarded_fn!(@for [extern "C" fn($($a),*) -> R] $($a $i),*);
    };
    (@for [$f:ty] $($a:ident $i:tt),*) => {
        // SAFETY: an `extern "C"` function of integer and pointer arguments
        // (`Word`) and an integer, pointer or no result (`FromWord`).
        unsafe impl<R: FromWord, $($a: Word),*> GuardedFn<($($a,)*)> for $f {
            type Output = R;
            #[inline(always)]
            fn address(self) -> *const c_void {
                self as *const c_void
            }
            #[inline(always)]
            #[allow(unused_variables, unused_mut)]
            fn words(args: ($($a,)*)) -> [u64; 5] {
                let mut w = [0u64; 5];
                $(w[$i] = args.$i.to_word();)*
                w
            }
        }
    };
}
guarded_fn!();
guarded_fn!(A0 0);
guarded_fn!(A0 0, A1 1);
guarded_fn!(A0 0, A1 1, A2 2);
guarded_fn!(A0 0, A1 1, A2 2, A3 3);
guarded_fn!(A0 0, A1 1, A2 2, A3 3, A4 4);
