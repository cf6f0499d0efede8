use std::path::PathBuf;

use strata_fstree::{Dest, WalkOptions, walk};

use crate::{Resolution, Source, SourceContext, SourceError, StoreObject, hash_parts};

/// One `tree` entry of a spec: a host file or directory mapped into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeInput {
    /// The host path (already resolved against the spec's directory).
    pub src: PathBuf,
    /// Where it goes in the image ([`Dest::Root`]: a directory's contents to the top).
    pub dest: Dest,
    /// Mode of the top entry.
    pub mode: Option<u32>,
    /// Owner of every entry.
    pub uid: Option<u32>,
    /// Group of every entry.
    pub gid: Option<u32>,
    /// Where the entry is written in the spec, for messages (`strata.toml:7:3: base.tree[0]`).
    pub context: String,
}

/// The local tree source: one store object per entry, no references.
#[derive(Debug, Clone, Default)]
pub struct TreeSource {
    inputs: Vec<TreeInput>,
}

impl TreeSource {
    /// A source for these entries, in spec order.
    pub fn new(inputs: Vec<TreeInput>) -> Self {
        Self { inputs }
    }
}

impl Source for TreeSource {
    fn kind(&self) -> &'static str {
        "tree"
    }

    fn provided_paths(&self) -> Vec<strata_fstree::ImagePath> {
        // A `dest = "/"` entry provides paths known only once it is walked.
        self.inputs
            .iter()
            .filter_map(|i| i.dest.path().cloned())
            .collect()
    }

    fn resolve(&self, _ctx: &SourceContext<'_>) -> Result<Resolution, SourceError> {
        let mut out = Resolution::default();
        for input in &self.inputs {
            let opts = WalkOptions {
                mode: input.mode,
                uid: input.uid,
                gid: input.gid,
            };
            let (tree, fingerprint) =
                walk(&input.src, &input.dest, &opts).map_err(|e| SourceError::Entry {
                    context: input.context.clone(),
                    // The walk error names the file; this names the spec entry.
                    message: format!("cannot copy `{}` into the image", input.dest.absolute()),
                    source: Some(Box::new(e)),
                })?;
            let overrides = format!("{:?}/{:?}/{:?}", input.mode, input.uid, input.gid);
            let id = format!("tree:{}", input.dest.absolute());
            // Two entries may target the same place; keep ids unique and stable.
            let id = if out.objects.iter().any(|o| o.id == id) {
                format!("{id}#{}", out.objects.len())
            } else {
                id
            };
            out.roots.push(id.clone());
            out.objects.push(StoreObject {
                id,
                tree,
                references: Vec::new(),
                cache_key: hash_parts([
                    b"tree-v1".as_slice(),
                    fingerprint.as_bytes(),
                    input.dest.as_str().as_bytes(),
                    overrides.as_bytes(),
                ]),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn one_object_per_entry_and_missing_src_names_the_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("motd"), "hi").expect("write");
        let input = |src: &str, dest: &str| TreeInput {
            src: dir.path().join(src),
            dest: strata_fstree::Dest::new(dest).expect("path"),
            mode: None,
            uid: None,
            gid: None,
            context: format!("strata.toml:3:1: base.tree[{src}]"),
        };
        let session = crate::Session::new();
        let ctx = SourceContext::new(dir.path(), "amd64", &session);
        let src = TreeSource::new(vec![input("motd", "/etc/motd"), input("motd", "/etc/motd")]);
        let res = src.resolve(&ctx).expect("resolve");
        assert_eq!(res.objects.len(), 2);
        assert_eq!(res.roots, ["tree:/etc/motd", "tree:/etc/motd#1"]);
        assert_eq!(res.objects[0].cache_key, res.objects[1].cache_key);

        let err = TreeSource::new(vec![input("nope", "/x")])
            .resolve(&ctx)
            .expect_err("missing file");
        let msg = err.to_string();
        assert_eq!(
            msg,
            "strata.toml:3:1: base.tree[nope]: cannot copy `/x` into the image"
        );
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            cause.is_some_and(|c| c.contains("nope")),
            "the cause names the file"
        );
    }
}
