//! The end-to-end tests' helpers live in the shared `strata-test-support` crate; this module
//! keeps the `mod common; use common::*;` of every test file working.

#![allow(unused_imports)]

pub use strata_test_support::*;
