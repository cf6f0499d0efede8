//! Stage 2: the layer plan. The planner groups the objects into layers (the base half below
//! the user half, within the layer budget less what post-layer steps reserve); the
//! customisation layer, the sources' generated files and the workspace account, goes on top;
//! every layer gets entries for the directories its files live in.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use strata_fstree::{Entry, EntryKind, ImagePath, Tree};
use strata_layers::{Node, plan as plan_layers};
use strata_source::{PostLayerStep, StoreObject, hash_parts};
use strata_spec::Spec;

use crate::assemble::image_env;
use crate::resolve::Resolved;
use crate::{BuildError, BuildOptions};

/// The `part` of the base half's layers.
pub(crate) const BASE: &str = "base";
/// The `part` of the user half's layers (its Debian packages only, in a configured image).
pub(crate) const USER: &str = "user";
/// The `part` of the user half's other content in a configured image (tree, downloads,
/// Python, Nix), above the user configure layer.
pub(crate) const USER_CONTENT: &str = "user-content";

/// The image's layers before anything is written.
pub(crate) struct Plan {
    /// The package layers, base then user.
    pub layers: Vec<PlannedLayer>,
    /// The sources' generated files, for the customisation layer.
    pub customisation: Vec<Entry>,
    /// The sources' post-layer steps.
    pub steps: Vec<Arc<dyn PostLayerStep>>,
    /// The environment the content needs (the account's defaults first, once
    /// [`customisation_layer`] has run).
    pub env: Vec<(String, String)>,
    /// The workspace account, when the spec has one (known once [`customisation_layer`] has
    /// run).
    pub account: Option<strata_coder::AccountFiles>,
}

impl Plan {
    /// Bytes of file content in the planned layers.
    pub fn content_bytes(&self) -> u64 {
        self.layers
            .iter()
            .flat_map(|l| &l.objects)
            .map(StoreObject::size)
            .sum()
    }
}

/// Plans the package layers of the resolved sources.
pub(crate) fn plan(resolved: Resolved, opts: &BuildOptions) -> Plan {
    let Resolved {
        objects,
        groups,
        group_parts,
        customisation,
        env,
        steps,
    } = resolved;
    let nodes: Vec<Node> = objects
        .values()
        .map(|o| Node {
            id: o.id.clone(),
            references: o.references.clone(),
        })
        .collect();
    // Layers the steps will most likely add need a place too (a base layer, a user layer and
    // the customisation layer always have one). One per half as soon as any step asks, so a
    // change of [user] alone (adding the user half's step) never changes the budget, and so
    // the base layers.
    let reserve = if steps.iter().any(|s| s.reserves_layer()) {
        2.min(opts.max_layers.saturating_sub(3))
    } else {
        0
    };
    let mut layers: Vec<PlannedLayer> = plan_layers(&nodes, &groups, opts.max_layers - 1 - reserve)
        .into_iter()
        .map(|l| PlannedLayer {
            part: group_parts.get(l.group).copied().unwrap_or(USER),
            objects: l
                .objects
                .iter()
                .filter_map(|id| objects.get(id).cloned())
                .collect(),
            parents: Vec::new(),
        })
        .collect();
    add_parents(&mut layers);
    Plan {
        layers,
        customisation,
        steps,
        env,
        account: None,
    }
}

/// The customisation layer: the sources' generated files and the workspace account, made
/// over the package layers and what the steps below left in `/etc` (`step_files`). Gives
/// every layer its parent directories anew, the customisation layer included.
pub(crate) fn customisation_layer(
    spec: &Spec,
    plan: &mut Plan,
    step_files: &[Entry],
) -> Result<Option<PlannedLayer>, BuildError> {
    let mut customisation = std::mem::take(&mut plan.customisation);
    plan.account = account_customisation(
        spec,
        &plan.layers,
        step_files,
        &mut customisation,
        &mut plan.env,
    )?;
    services_customisation(spec, &plan.layers, step_files, &mut customisation)?;
    if customisation.is_empty() {
        return Ok(None);
    }
    let customisation = through_lower_symlinks(&plan.layers, customisation);
    plan.layers.push(customisation_layer_of(customisation));
    add_parents(&mut plan.layers);
    Ok(plan.layers.pop())
}

/// A layer to write.
pub(crate) struct PlannedLayer {
    /// `base`, `user`, `customisation` or a step's name.
    pub part: &'static str,
    /// What it holds.
    pub objects: Vec<StoreObject>,
    /// Directories the layer does not hold but its entries live in (see [`add_parents`]).
    pub parents: Vec<Entry>,
}

/// Moves generated entries whose parent directory is a symlink in a lower layer to where the
/// symlink leads, as writing the file in the running image would. Without this, `/bin/sh` on
/// a merged-/usr Debian base (where `/bin` links to `usr/bin`) would bring a `/bin` directory
/// that hides the link and everything behind it.
fn through_lower_symlinks(lower: &[PlannedLayer], entries: Vec<Entry>) -> Vec<Entry> {
    let mut links: BTreeMap<&str, &str> = BTreeMap::new();
    for layer in lower {
        for obj in &layer.objects {
            for e in obj.tree.entries() {
                if let EntryKind::Symlink { target } = &e.kind {
                    links.insert(e.path.as_str(), target.as_str());
                }
            }
        }
    }
    if links.is_empty() {
        return entries;
    }
    entries
        .into_iter()
        .map(|mut e| {
            if let Some(parent) = e.path.parent()
                && let Some(resolved) = resolve_dir(parent.as_str(), &links)
                && let Ok(moved) = ImagePath::new(&format!("{resolved}/{}", e.path.file_name()))
            {
                e.path = moved;
            }
            e
        })
        .collect()
}

/// Resolves a directory path through image symlinks (relative or absolute targets, at most 40
/// hops, never above the root). `None` when nothing on the way is a symlink.
fn resolve_dir(path: &str, links: &BTreeMap<&str, &str>) -> Option<String> {
    let mut todo: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(part);
        let here = done.join("/");
        if let Some(target) = links.get(here.as_str()) {
            hops += 1;
            if hops > 40 {
                return None;
            }
            done.pop();
            if target.starts_with('/') {
                done.clear();
            }
            todo.extend(target.split('/').rev().map(str::to_owned));
        }
    }
    (hops > 0).then(|| done.join("/"))
}

/// The last layer: what the sources generated to tie their content together.
fn customisation_layer_of(entries: Vec<Entry>) -> PlannedLayer {
    let tree = Tree::from_entries(entries);
    // Generated entries are small and held in memory, so their description is their content.
    let key = hash_parts([
        b"customisation-v1".as_slice(),
        format!("{tree:?}").as_bytes(),
    ]);
    PlannedLayer {
        part: "customisation",
        objects: vec![StoreObject {
            id: "customisation".into(),
            tree,
            references: Vec::new(),
            cache_key: key,
        }],
        parents: Vec::new(),
    }
}

/// Gives every layer explicit entries for the directories its files live in.
///
/// Without them, a runtime that unpacks each layer on its own (Docker's overlay2 driver does)
/// invents missing parents as root-owned 0755 directories with the current time, and those
/// shadow the real directory of a lower layer: `/home/dev` owned by the user would turn into
/// root's. Each parent gets the metadata the directory has in the image so far (the highest
/// layer up to this one that holds it), or root 0755 if no layer does.
fn add_parents(layers: &mut [PlannedLayer]) {
    let mut known: BTreeMap<ImagePath, Entry> = BTreeMap::new();
    for layer in layers.iter_mut() {
        let own: HashSet<&ImagePath> = layer
            .objects
            .iter()
            .flat_map(|o| o.tree.entries().iter().map(|e| &e.path))
            .collect();
        for obj in &layer.objects {
            for e in obj.tree.entries() {
                if matches!(e.kind, EntryKind::Directory) {
                    known.insert(e.path.clone(), e.clone());
                }
            }
        }
        let mut parents: BTreeMap<ImagePath, Entry> = BTreeMap::new();
        for path in &own {
            // Fast path: the parent is in the layer itself (true for all but a layer's top).
            if path.parent().is_none_or(|p| own.contains(&p)) {
                continue;
            }
            let mut parent = path.parent();
            while let Some(p) = parent {
                if own.contains(&p) || parents.contains_key(&p) {
                    break;
                }
                parent = p.parent();
                let entry = known
                    .get(&p)
                    .cloned()
                    .unwrap_or_else(|| Entry::directory(p.clone(), 0o755));
                parents.insert(p, entry);
            }
        }
        layer.parents = parents.into_values().collect();
    }
}

/// Everything below the customisation layer and the customisation entries so far, in image
/// order: the step layers' files come above the package layers and below the user half's
/// other content.
fn image_files<'a>(
    planned: &'a [PlannedLayer],
    step_files: &'a [Entry],
    customisation: &'a [Entry],
) -> strata_coder::FileIndex {
    let of = |above: bool| {
        planned
            .iter()
            .filter(move |l| (l.part == USER_CONTENT) == above)
            .flat_map(|l| &l.objects)
            .flat_map(|o| o.tree.entries())
    };
    strata_coder::FileIndex::from_entries(
        of(false)
            .chain(step_files)
            .chain(of(true))
            .chain(customisation.iter()),
    )
}

/// `[services]`: the links that enable its `enable` units and whiteouts for the links of its
/// `disable` units (see [`strata_coder::services`]), over everything below the customisation
/// layer. An unknown unit is an error naming the units there are.
fn services_customisation(
    spec: &Spec,
    planned: &[PlannedLayer],
    step_files: &[Entry],
    customisation: &mut Vec<Entry>,
) -> Result<(), BuildError> {
    let Some(sv) = &spec.services else {
        return Ok(());
    };
    let files = image_files(planned, step_files, customisation);
    let located = |e: strata_coder::services::ServiceError| {
        BuildError::Source(strata_source::SourceError::Entry {
            context: format!("{}: {}", sv.location, sv.key),
            message: e.to_string(),
            source: None,
        })
    };
    let links = strata_coder::services::enable_links(&files, &sv.enable).map_err(located)?;
    let whiteouts =
        strata_coder::services::disable_whiteouts(&files, &sv.disable).map_err(located)?;
    customisation.extend(links);
    customisation.extend(whiteouts);
    Ok(())
}

/// Adds the workspace account of `[account]` / `[coder]` (see [`strata_coder::account`]) to the
/// customisation entries: `/etc/passwd`, `/etc/group` and `/etc/shadow` merged with what the
/// layers below and the sources' own customisation hold (the highest provider of a file wins),
/// the home directory, the sudoers drop-in. Its environment defaults (`LANG`) go below the
/// sources' environment; the returned files carry the `User` and `WorkingDir` defaults.
fn account_customisation(
    spec: &Spec,
    planned: &[PlannedLayer],
    step_files: &[Entry],
    customisation: &mut Vec<Entry>,
    source_env: &mut Vec<(String, String)>,
) -> Result<Option<strata_coder::AccountFiles>, BuildError> {
    let Some(account) = spec.account() else {
        return Ok(None);
    };
    let files = image_files(planned, step_files, customisation);
    let path_env = image_env(source_env, &spec.config.env)
        .into_iter()
        .find_map(|kv| kv.strip_prefix("PATH=").map(str::to_owned));
    let generated =
        strata_coder::account_files(&account, &files, path_env.as_deref(), spec.coder.is_some())
            .map_err(|e| {
                let at = match (&spec.account, &spec.coder) {
                    (Some(a), _) => format!("{}: {}", a.location, a.key),
                    (None, Some(c)) => format!("{}: {}", c.location, c.key),
                    (None, None) => spec.path.display().to_string(),
                };
                BuildError::Source(strata_source::SourceError::Entry {
                    context: at,
                    message: e.to_string(),
                    source: None,
                })
            })?;
    customisation.extend(generated.entries.iter().cloned());
    source_env.splice(0..0, generated.env.iter().cloned());
    Ok(Some(generated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_fstree::Tree;

    fn object(id: &str, entries: Vec<Entry>) -> StoreObject {
        StoreObject {
            id: id.into(),
            tree: Tree::from_entries(entries),
            references: Vec::new(),
            cache_key: id.into(),
        }
    }

    fn path(p: &str) -> ImagePath {
        ImagePath::new(p).expect("path")
    }

    #[test]
    fn generated_entries_follow_lower_symlinks() {
        let base = object(
            "base",
            vec![
                Entry::symlink(path("bin"), "usr/bin"),
                Entry::symlink(path("lib64"), "/usr/lib64"),
                Entry::directory(path("usr/bin"), 0o755),
            ],
        );
        let layers = vec![PlannedLayer {
            part: "base",
            objects: vec![base],
            parents: Vec::new(),
        }];
        let moved = through_lower_symlinks(
            &layers,
            vec![
                Entry::symlink(path("bin/sh"), "dash"),
                Entry::symlink(path("lib64/ld-linux-x86-64.so.2"), "x"),
                Entry::inline_file(path("etc/passwd"), 0o644, b"root".to_vec()),
            ],
        );
        let paths: Vec<&str> = moved.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["usr/bin/sh", "usr/lib64/ld-linux-x86-64.so.2", "etc/passwd"]
        );
    }

    #[test]
    fn upper_layers_carry_their_parents_with_the_lower_layers_metadata() {
        let mut home = Entry::directory(path("home/dev"), 0o700);
        home.uid = 1000;
        let lower = object(
            "lower",
            vec![
                home,
                Entry::inline_file(path("home/dev/a"), 0o644, b"a".to_vec()),
            ],
        );
        let upper = object(
            "upper",
            vec![Entry::inline_file(path("home/dev/b"), 0o644, b"b".to_vec())],
        );
        let mut layers = vec![
            PlannedLayer {
                part: "base",
                objects: vec![lower],
                parents: Vec::new(),
            },
            PlannedLayer {
                part: "user",
                objects: vec![upper],
                parents: Vec::new(),
            },
        ];
        add_parents(&mut layers);
        let lower_parents: Vec<(&str, u32, u32)> = layers[0]
            .parents
            .iter()
            .map(|e| (e.path.as_str(), e.mode, e.uid))
            .collect();
        assert_eq!(lower_parents, [("home", 0o755, 0)]);
        let upper_parents: Vec<(&str, u32, u32)> = layers[1]
            .parents
            .iter()
            .map(|e| (e.path.as_str(), e.mode, e.uid))
            .collect();
        assert_eq!(
            upper_parents,
            [("home", 0o755, 0), ("home/dev", 0o700, 1000)]
        );
    }
}
