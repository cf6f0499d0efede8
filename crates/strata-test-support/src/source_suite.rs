//! One test suite every content source passes (as snix runs one suite over its backends): a
//! new source is proven by calling [`check_source`] and [`check_source_error`] from its tests.
//!
//! - the same inputs give the same resolution twice (objects, their trees, cache keys, roots,
//!   generated files, environment), each time from a fresh source value;
//! - references are closed: every reference and every root names an object of the resolution,
//!   and object ids are unique;
//! - cache keys are well formed and mean what they promise (equal keys, equal trees);
//! - a failure names where the input is in the spec.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error as _;

use strata_source::{Resolution, Source, SourceContext, SourceError};

/// The whole chain of an error, `: `-separated (what the CLI prints).
pub fn error_chain(err: &SourceError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Resolves the source `make` builds twice, each from a fresh value, and checks the suite's
/// properties. Returns the resolution for source-specific assertions.
pub fn check_source(make: &dyn Fn() -> Box<dyn Source>, ctx: &SourceContext<'_>) -> Resolution {
    let resolve = || {
        let source = make();
        let kind = source.kind();
        match source.resolve(ctx) {
            Ok(r) => r,
            Err(e) => panic!("the {kind} source failed: {}", error_chain(&e)),
        }
    };
    let first = resolve();
    let kind = make().kind();
    assert!(
        !first.objects.is_empty(),
        "{kind}: the suite's input gave no objects"
    );

    let mut ids = BTreeSet::new();
    for object in &first.objects {
        assert!(
            ids.insert(object.id.as_str()),
            "{kind}: two objects are named {}",
            object.id
        );
    }
    for object in &first.objects {
        for reference in &object.references {
            assert!(
                ids.contains(reference.as_str()),
                "{kind}: {} refers to {reference}, which is not an object of the resolution",
                object.id
            );
        }
    }
    assert!(!first.roots.is_empty(), "{kind}: no roots");
    for root in &first.roots {
        assert!(
            ids.contains(root.as_str()),
            "{kind}: root {root} is not an object"
        );
    }

    let mut by_key = BTreeMap::new();
    for object in &first.objects {
        assert!(
            object.cache_key.len() >= 32 && !object.cache_key.contains(char::is_whitespace),
            "{kind}: {} has cache key {:?}, not a hash",
            object.id,
            object.cache_key
        );
        if let Some(other) = by_key.insert(object.cache_key.as_str(), object) {
            assert_eq!(
                other.tree, object.tree,
                "{kind}: {} and {} share a cache key but not their trees",
                other.id, object.id
            );
        }
    }

    let second = resolve();
    assert_eq!(
        first.objects.len(),
        second.objects.len(),
        "{kind}: a second resolution gave another number of objects"
    );
    for (a, b) in first.objects.iter().zip(&second.objects) {
        assert_eq!(
            a.id, b.id,
            "{kind}: object order or ids changed between resolutions"
        );
        assert_eq!(
            a.cache_key, b.cache_key,
            "{kind}: cache key of {} changed",
            a.id
        );
        assert_eq!(a.tree, b.tree, "{kind}: tree of {} changed", a.id);
        assert_eq!(
            a.references, b.references,
            "{kind}: references of {} changed",
            a.id
        );
    }
    assert_eq!(first, second, "{kind}: the second resolution differs");
    first
}

/// Resolves a source whose input is broken and checks that it fails with a message that
/// names `location` (e.g. `strata.toml:7:3: base.tree[0]`) and every `needles` string.
pub fn check_source_error(
    source: &dyn Source,
    ctx: &SourceContext<'_>,
    location: &str,
    needles: &[&str],
) -> String {
    let kind = source.kind();
    let err = match source.resolve(ctx) {
        Ok(_) => panic!("the {kind} source accepted a broken input"),
        Err(e) => error_chain(&e),
    };
    assert!(
        err.contains(location),
        "{kind}: the error does not say where: {err}"
    );
    for needle in needles {
        assert!(
            err.contains(needle),
            "{kind}: the error does not mention {needle}: {err}"
        );
    }
    err
}
