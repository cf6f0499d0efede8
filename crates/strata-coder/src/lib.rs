//! Coder workspaces from strata images.
//!
//! * [`account`]: the workspace account (`[account]` in the spec): `/etc/passwd`, `/etc/group`,
//!   `/etc/shadow` merged with the image's own, the home directory with the skeleton files, the
//!   sudoers drop-in, and the `User`/`WorkingDir` defaults of the image configuration.
//! * [`busybox`]: the applets a busybox binary provides, read from its bytes.
//! * [`check`]: Coder's workspace-image minimums, checked on the image's files without a
//!   container engine (`strata check --coder`).
//! * [`template`]: Coder templates (Docker or Kubernetes) that run the image by digest.
//! * [`index`] and [`image`]: the file index of an image, read from its layers (whiteouts
//!   applied, symbolic links resolved inside the image) or from the build's entries.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

pub mod account;
pub mod busybox;
pub mod check;
pub mod image;
pub mod index;
pub mod passwd;
pub mod services;
pub mod template;

pub use account::{AccountError, AccountFiles, account_files};
pub use check::{CheckItem, CheckReport, check_coder};
pub use image::{ImageFiles, OpenError, open_built, open_docker_archive, open_oci_layout};
pub use index::FileIndex;
