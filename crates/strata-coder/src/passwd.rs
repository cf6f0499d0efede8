//! The account databases' parser and editors live in `strata_fstree::passwd` (one parser for
//! the Coder account, the check and the sandbox's user lookup); re-exported here.

pub use strata_fstree::passwd::*;
