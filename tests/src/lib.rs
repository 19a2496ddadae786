//! corral-tests: helpers shared by corral's integration tests, on the host and in the VM.
//!
//! # Layout
//! - [`guest`]: checks that a VM test really runs inside the sched_ext guest, and fails loudly
//!   when it does not.

pub mod guest;
