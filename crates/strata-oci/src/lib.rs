//! Everything about the bytes of an image: deterministic layer tars, their compression and
//! digests, the OCI image JSON documents, and the writers for an OCI image layout and a
//! docker-archive.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

pub mod compress;
pub mod digest;
pub mod image;
pub mod layer;
pub mod output;
pub mod read;
pub mod tar;
pub mod whiteout;

pub use digest::{Digest, DigestError};
