//! Stage 1: the spec's sources, resolved into store objects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use strata_fstree::{Entry, ImagePath};
use strata_layers::Group;
use strata_source::{
    PostLayerStep, Resolution, Source, SourceContext, StoreObject, TreeInput, TreeSource,
};
use strata_spec::{Part, Spec};
use strata_store::Store;

use crate::{BuildError, BuildOptions, Reporter};

/// Both halves' sources, resolved.
pub(crate) struct Resolved {
    /// Every object of the image by id.
    pub objects: BTreeMap<String, StoreObject>,
    /// The layer groups, lowest first: the base half's roots, then the user half's (its
    /// Debian packages and its other content apart when the image is configured).
    pub groups: Vec<Group>,
    /// The `part` of each group's layers.
    pub group_parts: Vec<&'static str>,
    /// The sources' generated files, for the customisation layer.
    pub customisation: Vec<Entry>,
    /// The environment the sources need.
    pub env: Vec<(String, String)>,
    /// The sources' post-layer steps, base half first.
    pub steps: Vec<Arc<dyn PostLayerStep>>,
}

/// The sources of one half, in the order their content is layered.
pub(crate) fn sources_for(spec: &Spec, part: Part, opts: &BuildOptions) -> Vec<Box<dyn Source>> {
    let half = spec.half(part);
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    // Debian packages first: Nix and tree content go above them.
    if let Some(input) = strata_debian::DebianInput::from_spec(spec, part) {
        sources.push(Box::new(strata_debian::DebianSource::new(input)));
    }
    if let Some(input) = nix_input(spec, part) {
        sources.push(Box::new(strata_nix::NixSource::new(input)));
    }
    // Downloads sit below the half's tree entries, which may override their files.
    let fetch = strata_fetch::FetchOptions {
        locked: opts.locked,
        offline: opts.offline,
    };
    if let Some(source) = strata_fetch::FetchSource::from_spec(spec, part, fetch) {
        sources.push(Box::new(source));
    }
    let python = strata_python::PythonOptions {
        locked: opts.locked,
        offline: opts.offline,
    };
    if let Some(source) = strata_python::PythonSource::from_spec(spec, part, python) {
        sources.push(Box::new(source));
    }
    let inputs: Vec<TreeInput> = half
        .tree
        .iter()
        .map(|t| TreeInput {
            src: spec.source_path(t),
            dest: t.dest.clone(),
            mode: t.mode,
            uid: t.uid,
            gid: t.gid,
            context: format!("{}: {}", t.location, t.key),
        })
        .collect();
    if !inputs.is_empty() {
        sources.push(Box::new(TreeSource::new(inputs)));
    }
    sources
}

/// The Nix source's input for one half of `spec`, or `None` when the half has no `nix`.
pub fn nix_input(spec: &Spec, part: Part) -> Option<strata_nix::NixInput> {
    let nix = spec.half(part).nix.as_ref()?;
    let mut input = strata_nix::NixInput::new(
        nix.installables.clone(),
        nix.paths.clone(),
        nix.effective_profile(),
        spec.dir.clone(),
        format!("{}: {}", nix.location, nix.key),
    );
    input.database = nix.database;
    // The workspace account runs Nix, so it owns the store and Nix's state.
    if let Some(account) = spec.account() {
        input.owner = (account.uid, account.gid);
    }
    input.lock_file = Some(strata_fetch::lock_path(&spec.path));
    input.half = part.name().to_owned();
    Some(input)
}

/// Resolves every source of both halves. Each source learns from its context what the
/// others bring (a base system, explicit paths), so sources never need to know each other.
pub(crate) fn resolve(
    spec: &Spec,
    store: &Store,
    opts: &BuildOptions,
    reporter: &dyn Reporter,
) -> Result<Resolved, BuildError> {
    // Memo tables of the sources live as long as this build.
    let session = strata_source::Session::new();
    let halves: Vec<Vec<Box<dyn Source>>> = [Part::Base, Part::User]
        .into_iter()
        .map(|part| sources_for(spec, part, opts))
        .collect();
    let all: Vec<&dyn Source> = halves.iter().flatten().map(|s| s.as_ref()).collect();
    let mut resolutions = Vec::new();
    // Per half, the roots the Debian source brought.
    let mut debian_roots: Vec<BTreeSet<String>> = Vec::new();
    let mut at = 0;
    for (half, part) in halves.iter().zip([Part::Base, Part::User]) {
        let mut out = Resolution::default();
        let mut debian = BTreeSet::new();
        for source in half {
            let others = || {
                all.iter()
                    .enumerate()
                    .filter(move |(i, _)| *i != at)
                    .map(|(_, s)| *s)
            };
            let provided: BTreeSet<ImagePath> = others().flat_map(|s| s.provided_paths()).collect();
            let cache_dir = store.source_dir(source.kind())?;
            let ctx = SourceContext {
                locked: opts.locked,
                offline: opts.offline,
                system_provided: others().any(|s| s.provides_system()),
                provided: &provided,
                reporter,
                ..SourceContext::new(&cache_dir, &spec.image.architecture, &session)
            };
            let resolution = source.resolve(&ctx)?;
            if source.kind() == "debian" {
                debian.extend(resolution.roots.iter().cloned());
            }
            out.extend(resolution);
            at += 1;
        }
        // The half's `links`, in the customisation layer (above every source's content).
        out.customisation.extend(
            spec.half(part)
                .links
                .iter()
                .map(|(path, target)| Entry::symlink(path.clone(), target.clone())),
        );
        resolutions.push(out);
        debian_roots.push(debian);
    }
    let mut customisation = Vec::new();
    let mut env = Vec::new();
    let mut steps = Vec::new();
    for half in &mut resolutions {
        customisation.append(&mut half.customisation);
        env.append(&mut half.env);
        steps.append(&mut half.steps);
    }
    let (objects, mut groups) = merge_halves(resolutions);
    let mut group_parts = vec![crate::plan::BASE, crate::plan::USER];
    // A configured image keeps the user half's other content (tree, downloads, Python, Nix)
    // above the user configure layer, so a change of a file never re-runs a script. Always
    // three groups then, so the budget's split (and the base layers) never depends on what
    // `[user]` holds.
    if steps.iter().any(|s| s.reserves_layer())
        && let Some(user) = groups.pop()
    {
        let user_debian = debian_roots.pop().unwrap_or_default();
        let (packages, files): (Vec<String>, Vec<String>) = user.roots.into_iter().partition(|r| {
            user_debian.contains(r)
                || r.strip_suffix("#user")
                    .is_some_and(|id| user_debian.contains(id))
        });
        groups.push(Group { roots: packages });
        groups.push(Group { roots: files });
        group_parts.push(crate::plan::USER_CONTENT);
    }
    Ok(Resolved {
        objects,
        groups,
        group_parts,
        customisation,
        env,
        steps,
    })
}

/// Puts both halves' objects in one map. An object both halves produce identically is kept
/// once (in the base); a same-named but different user object is renamed.
fn merge_halves(halves: Vec<Resolution>) -> (BTreeMap<String, StoreObject>, Vec<Group>) {
    let mut objects: BTreeMap<String, StoreObject> = BTreeMap::new();
    let mut groups = Vec::new();
    for half in halves {
        let mut renamed: BTreeMap<String, String> = BTreeMap::new();
        for mut obj in half.objects {
            if let Some(existing) = objects.get(&obj.id) {
                if existing.cache_key == obj.cache_key {
                    continue;
                }
                let new_id = format!("{}#user", obj.id);
                renamed.insert(obj.id.clone(), new_id.clone());
                obj.id = new_id;
            }
            objects.insert(obj.id.clone(), obj);
        }
        let fix = |id: String| renamed.get(&id).cloned().unwrap_or(id);
        for obj in objects.values_mut() {
            obj.references = obj.references.drain(..).map(fix).collect();
        }
        groups.push(Group {
            roots: half.roots.into_iter().map(fix).collect(),
        });
    }
    (objects, groups)
}
