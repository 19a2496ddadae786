//! Byte views of the `intf.h` structs, for map keys and values.
//!
//! Only the structs listed here implement [`Plain`]: each is `#[repr(C)]`, made of integers and
//! integer arrays only, and has no padding (checked by the size assertions below), so viewing it
//! as bytes reads no uninitialised memory and any byte pattern is a valid value.

use crate::bpf_intf::{
    corral_build_args, corral_cgroup, corral_group, corral_group_stats, corral_joiner,
    corral_kick_args, corral_layout,
};

/// A plain-old-data struct shared with BPF; see the module documentation.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, contain only integers, and have no padding.
pub(crate) unsafe trait Plain: Copy {}

// SAFETY: all six are bindgen's #[repr(C)] translations of intf.h structs made of u32/u64
// fields and arrays; the assertions below prove they have no padding.
unsafe impl Plain for corral_layout {}
unsafe impl Plain for corral_cgroup {}
unsafe impl Plain for corral_group {}
unsafe impl Plain for corral_group_stats {}
unsafe impl Plain for corral_build_args {}
unsafe impl Plain for corral_kick_args {}
// SAFETY: integers only.
unsafe impl Plain for corral_joiner {}
unsafe impl Plain for u32 {}
unsafe impl Plain for u64 {}

const _: () = {
    use std::mem::size_of;
    assert!(size_of::<corral_layout>() == 6 * 4 + 8);
    assert!(size_of::<corral_cgroup>() == 2 * 4);
    assert!(size_of::<corral_group>() == 8 * 8 + 4 + 4 + 8 + 4 + 4 + 8);
    assert!(size_of::<corral_group_stats>() == (13 + 32) * 8);
    assert!(size_of::<corral_joiner>() == 4 * 4 + 8);
    assert!(size_of::<corral_build_args>() == 4 * 4);
    assert!(size_of::<corral_kick_args>() == 8 + 2 * 4);
};

/// The bytes of `value`.
pub(crate) fn bytes_of<T: Plain>(value: &T) -> &[u8] {
    // SAFETY: T: Plain has no padding, so all size_of::<T>() bytes are initialised.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

/// The bytes of `value`, mutably (for test_run contexts the kernel writes back).
pub(crate) fn bytes_of_mut<T: Plain>(value: &mut T) -> &mut [u8] {
    // SAFETY: as above, and any byte pattern is a valid T, so writes cannot break invariants.
    unsafe { std::slice::from_raw_parts_mut((value as *mut T).cast::<u8>(), size_of::<T>()) }
}

/// A `T` read from the start of `bytes`, or `None` when `bytes` is too short.
pub(crate) fn read<T: Plain>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked and any byte pattern is a valid T: Plain.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// An all-zero `T`.
pub(crate) fn zeroed<T: Plain>() -> T {
    // SAFETY: all-zero bytes are a valid T: Plain (integers only).
    unsafe { std::mem::zeroed() }
}
