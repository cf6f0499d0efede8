//! Test harnesses shared by the workspace's integration tests (`publish = false`): a per-test
//! work directory running the real `strata` binary ([`Work`]), snapshots of root file systems,
//! tool requirements that fail under CI and skip (saying why) only locally ([`require`]), a
//! real `docker-registry` on 127.0.0.1 ([`Registry`]), podman with this machine's settings, and
//! the test suite every content source passes ([`source_suite`]).
//!
//! Test code: panicking on a broken environment is the point, so `unwrap`/`expect` are fine.

#![allow(clippy::unwrap_used)]

mod hcl;
mod podman;
pub mod qemu;
mod registry;
mod serve;
mod snapshot;
pub mod source_suite;
mod tools;
mod work;

pub use hcl::*;
pub use podman::*;
pub use registry::*;
pub use serve::*;
pub use snapshot::*;
pub use tools::*;
pub use work::*;
