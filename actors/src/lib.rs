//! corral-actors: the control plane of corral, a set of actix actors that hand out CPU groups,
//! acquire containers and commit group enforcement before a function runs.
//!
//! # Layout
//! (filled in by the actor runtime issue)
