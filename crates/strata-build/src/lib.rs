//! The build pipeline.
//!
//! A spec goes through these steps: each half's sources resolve into store objects; the planner
//! groups objects into layers (base half below the user half); each layer is written once into
//! the store, indexed by the hash of its inputs so an unchanged layer is never written again;
//! the image configuration and manifest follow, and the image is recorded in the store. Writing
//! the image somewhere (OCI layout, docker-archive, registry) is the caller's choice.

mod configure;
mod reporter;

pub use reporter::{NoReporter, Reporter};

use std::collections::{BTreeMap, HashSet};
use std::io::BufWriter;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use strata_fstree::{Entry, EntryKind, ImagePath, Tree};
use strata_layers::{Group, Node, plan};
use strata_oci::Digest;
use strata_oci::compress::Compression;
use strata_oci::image::{
    self, CONFIG_MEDIA_TYPE, Descriptor, History, ImageConfig, MANIFEST_MEDIA_TYPE, Manifest,
    RootFs, RunConfig,
};
use strata_oci::layer::{LayerDigests, LayerOptions, write_layer};
use strata_oci::output::{BuiltImage, LayerBlob};
use strata_source::{
    Resolution, Source, SourceContext, StoreObject, TreeInput, TreeSource, hash_parts,
};
use strata_spec::{Part, Spec};
use strata_store::{BlobRef, ImageRecord, Store};

/// Version of the layer bytes strata writes; bump it when the tar or compression output changes
/// so old cache records are not reused for new bytes.
const LAYER_FORMAT: &str = "layer-v1";

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Layer compression.
    pub compression: Compression,
    /// Most layers the image may have, the customisation layer included.
    pub max_layers: usize,
    /// Worker threads (layers in parallel, and compression inside a layer).
    pub threads: usize,
    /// Clamp for every mtime, and the image's creation time.
    pub source_date_epoch: i64,
    /// How the Debian source uses the lock file and the network (`--locked`, `--offline`).
    pub debian: strata_debian::DebianOptions,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Gzip,
            max_layers: 100,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            source_date_epoch: 1,
            debian: strata_debian::DebianOptions::default(),
        }
    }
}

/// A build failure.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A source could not produce its objects.
    #[error(transparent)]
    Source(#[from] strata_source::SourceError),
    /// Writing a layer failed.
    #[error("writing layer {index} ({objects})")]
    Layer {
        /// Position of the layer, from 1.
        index: usize,
        /// The objects in it.
        objects: String,
        /// The cause.
        #[source]
        source: strata_oci::layer::LayerError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] strata_store::StoreError),
    /// Running the Debian maintainer scripts failed.
    #[error(transparent)]
    Configure(#[from] configure::ConfigureError),
    /// `max_layers` leaves no room.
    #[error(
        "--max-layers must be at least 3 (a base layer, a user layer and the customisation layer), got {0}"
    )]
    TooFewLayers(usize),
}

/// What the store remembers about a built layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digests and sizes.
    pub digests: LayerDigests,
    /// Compression of the blob.
    pub compression: String,
}

impl BlobRef for LayerRecord {
    fn blob_digest(&self) -> &str {
        &self.digests.digest
    }
}

/// One layer of a finished build.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Digest of the blob.
    pub digest: Digest,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Blob size.
    pub size: u64,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// `base`, `user`, `customisation` or `configure`.
    pub part: &'static str,
    /// The store objects in it.
    pub objects: Vec<String>,
    /// Whether the store already had it.
    pub cached: bool,
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The image, its blobs in the store.
    pub image: BuiltImage,
    /// Per-layer details.
    pub layers: Vec<LayerReport>,
}

struct PlannedLayer {
    part: &'static str,
    objects: Vec<StoreObject>,
    /// Directories the layer does not hold but its entries live in (see [`add_parents`]).
    parents: Vec<Entry>,
}

/// Builds the image of `spec` into `store`.
pub fn build(
    spec: &Spec,
    store: &Store,
    opts: &BuildOptions,
    reporter: &dyn Reporter,
) -> Result<BuildOutcome, BuildError> {
    if opts.max_layers < 3 {
        return Err(BuildError::TooFewLayers(opts.max_layers));
    }
    let _shared = store.lock_store(false)?;

    reporter.phase("resolving sources");
    let mut halves = Vec::new();
    let mut customisation = Vec::new();
    let mut source_env = Vec::new();
    for part in [Part::Base, Part::User] {
        let mut half = resolve_half(spec, part, store, opts)?;
        customisation.append(&mut half.customisation);
        source_env.append(&mut half.env);
        halves.push(half);
    }
    let (objects, groups) = merge_halves(halves);

    reporter.phase("planning layers");
    let nodes: Vec<Node> = objects
        .values()
        .map(|o| Node {
            id: o.id.clone(),
            references: o.references.clone(),
        })
        .collect();
    // The configure layer (when the Debian packages are configured) needs a place too.
    let reserve = usize::from(configure::wanted(spec) && opts.max_layers > 3);
    let planned: Vec<PlannedLayer> = plan(&nodes, &groups, opts.max_layers - 1 - reserve)
        .into_iter()
        .map(|l| PlannedLayer {
            part: if l.group == 0 { "base" } else { "user" },
            objects: l
                .objects
                .iter()
                .filter_map(|id| objects.get(id).cloned())
                .collect(),
            parents: Vec::new(),
        })
        .collect();
    let mut planned = planned;
    let account = account_customisation(spec, &planned, &mut customisation, &mut source_env)?;
    if !customisation.is_empty() {
        let customisation = through_lower_symlinks(&planned, customisation);
        planned.push(customisation_layer(customisation));
    }
    add_parents(&mut planned);

    let total_bytes: u64 = planned
        .iter()
        .flat_map(|l| &l.objects)
        .map(StoreObject::size)
        .sum();
    reporter.layers_planned(planned.len(), total_bytes);

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .build()
        .map_err(|e| {
            BuildError::Store(strata_store::StoreError::Io {
                action: "start worker threads for",
                path: store.root().to_owned(),
                source: std::io::Error::other(e),
            })
        })?;
    let built: Vec<Result<(LayerRecord, bool), BuildError>> = pool.install(|| {
        planned
            .par_iter()
            .enumerate()
            .map(|(i, layer)| build_layer(i + 1, layer, store, opts, reporter))
            .collect()
    });

    let mut layers = Vec::new();
    for (layer, result) in planned.iter().zip(built) {
        let (record, cached) = result?;
        layers.push(LayerReport {
            digest: record.digests.digest.clone(),
            diff_id: record.digests.diff_id.clone(),
            size: record.digests.size,
            uncompressed_size: record.digests.uncompressed_size,
            part: layer.part,
            objects: layer.objects.iter().map(|o| o.id.clone()).collect(),
            cached,
        });
    }

    if let Some(layer) = configure::configure(spec, store, opts, &planned, &layers, reporter)? {
        layers.push(layer);
    }

    reporter.phase("writing image configuration");
    let image = assemble(spec, store, opts, &layers, &source_env, account.as_ref())?;
    store.record_image(&ImageRecord {
        reference: image.reference(),
        manifest: image.manifest_digest.to_string(),
        blobs: [&image.manifest_digest, &image.config_digest]
            .into_iter()
            .chain(layers.iter().map(|l| &l.digest))
            .map(Digest::to_string)
            .collect(),
    })?;
    Ok(BuildOutcome { image, layers })
}

/// The sources of one half, in the order their content is layered.
fn sources_for(
    spec: &Spec,
    part: Part,
    opts: &BuildOptions,
) -> Result<Vec<Box<dyn Source>>, BuildError> {
    let half = spec.half(part);
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    // Debian packages first: Nix and tree content go above them.
    if let Some(input) = strata_debian::DebianInput::from_spec(spec, part, opts.debian) {
        sources.push(Box::new(strata_debian::DebianSource::new(input)));
    }
    if let Some(nix) = &half.nix {
        let mut input = strata_nix::NixInput::new(
            nix.installables.clone(),
            nix.paths.clone(),
            nix.effective_profile(),
            spec.dir.clone(),
            format!("{}: {}", nix.location, nix.key),
        );
        // A Debian half brings its own /bin/sh, /etc files and loader; tree entries win too.
        input.system_files = spec.base.debian.is_none() && spec.user.debian.is_none();
        input.provided = [&spec.base, &spec.user]
            .iter()
            // A `dest = "/"` tree provides paths known only once it is walked.
            .flat_map(|h| h.tree.iter().filter_map(|t| t.dest.path().cloned()))
            .collect();
        sources.push(Box::new(strata_nix::NixSource::new(input)));
    }
    // Downloads sit below the half's tree entries, which may override their files.
    let fetch = strata_fetch::FetchOptions {
        locked: opts.debian.locked,
        offline: opts.debian.offline,
    };
    if let Some(source) = strata_fetch::FetchSource::from_spec(spec, part, fetch) {
        sources.push(Box::new(source));
    }
    let python = strata_python::PythonOptions {
        locked: opts.debian.locked,
        offline: opts.debian.offline,
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
    Ok(sources)
}

/// Resolves every source of one half.
fn resolve_half(
    spec: &Spec,
    part: Part,
    store: &Store,
    opts: &BuildOptions,
) -> Result<Resolution, BuildError> {
    let mut out = Resolution::default();
    for source in sources_for(spec, part, opts)? {
        let cache_dir = store.source_dir(source.kind())?;
        let ctx = SourceContext {
            cache_dir: &cache_dir,
            architecture: &spec.image.architecture,
        };
        out.extend(source.resolve(&ctx)?);
    }
    Ok(out)
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

/// Writes one layer into the store, or finds it there already.
fn build_layer(
    index: usize,
    layer: &PlannedLayer,
    store: &Store,
    opts: &BuildOptions,
    reporter: &dyn Reporter,
) -> Result<(LayerRecord, bool), BuildError> {
    let sde = opts.source_date_epoch.to_string();
    let key = hash_parts(
        [
            LAYER_FORMAT.as_bytes(),
            opts.compression.as_str().as_bytes(),
            sde.as_bytes(),
        ]
        .into_iter()
        .chain(layer.objects.iter().map(|o| o.cache_key.as_bytes()))
        .chain([parents_key(&layer.parents).as_bytes()]),
    );
    let bytes: u64 = layer.objects.iter().map(StoreObject::size).sum();
    let lookup = |store: &Store| -> Result<Option<LayerRecord>, BuildError> {
        match store.layer_record::<LayerRecord>(&key)? {
            Some(rec) if store.has_blob(&rec.digests.digest)? => Ok(Some(rec)),
            _ => Ok(None),
        }
    };
    if let Some(rec) = lookup(store)? {
        reporter.layer_done(index, bytes, true);
        return Ok((rec, true));
    }
    // Another process may be writing the same layer: wait for it, then look again.
    let _lock = store.lock_key(&key)?;
    if let Some(rec) = lookup(store)? {
        reporter.layer_done(index, bytes, true);
        return Ok((rec, true));
    }

    let tree = Tree::from_entries(
        layer.parents.iter().cloned().chain(
            layer
                .objects
                .iter()
                .flat_map(|o| o.tree.entries().iter().cloned()),
        ),
    );
    let entries: Vec<_> = tree.entries().iter().collect();
    let layer_err = |source| BuildError::Layer {
        index,
        objects: describe(&layer.objects),
        source,
    };
    let temp = store.temp_file()?;
    let digests = {
        let out = BufWriter::with_capacity(1 << 20, temp.as_file());
        let lopts = LayerOptions {
            compression: opts.compression,
            threads: opts.threads.max(1),
            source_date_epoch: opts.source_date_epoch,
        };
        write_layer(&entries, &lopts, out).map_err(layer_err)?
    };
    store.commit_blob(temp, &digests.digest)?;
    let record = LayerRecord {
        digests,
        compression: opts.compression.as_str().to_owned(),
    };
    store.put_layer_record(&key, &record)?;
    reporter.layer_done(index, bytes, false);
    Ok((record, false))
}

/// The last layer: what the sources generated to tie their content together.
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

fn customisation_layer(entries: Vec<Entry>) -> PlannedLayer {
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

/// The image environment: what the sources need, then the spec's `[config] env` on top.
/// `PATH` entries from several sources are joined in order, without repeats; directories a
/// source marks [`strata_source::PATH_BEFORE_SYSTEM`] (a venv's `bin`) lead.
fn image_env(source_env: &[(String, String)], spec_env: &BTreeMap<String, String>) -> Vec<String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut before_system: Vec<&str> = Vec::new();
    for (k, v) in source_env {
        if k == strata_source::PATH_BEFORE_SYSTEM {
            before_system.extend(v.split(':').filter(|d| !d.is_empty()));
            continue;
        }
        match env.get_mut(k) {
            Some(old) if k == "PATH" => {
                for dir in v.split(':') {
                    if !old.split(':').any(|d| d == dir) {
                        old.push(':');
                        old.push_str(dir);
                    }
                }
            }
            _ => {
                env.insert(k.clone(), v.clone());
            }
        }
    }
    // When several sources contribute to PATH (a Debian half and a Nix half), the system's
    // directories come first and the sources' own (the Nix profile) after, whichever half
    // each is in, so system tools keep their usual names.
    if source_env.iter().filter(|(k, _)| k == "PATH").count() > 1
        && let Some(path) = env.get_mut("PATH")
    {
        const SYSTEM: [&str; 6] = [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ];
        let mut system: Vec<&str> = path.split(':').filter(|d| SYSTEM.contains(d)).collect();
        system.sort_by_key(|d| SYSTEM.iter().position(|s| s == d));
        let own = path.split(':').filter(|d| !SYSTEM.contains(d));
        *path = system.into_iter().chain(own).collect::<Vec<_>>().join(":");
    }
    if !before_system.is_empty() {
        let rest = env.remove("PATH").unwrap_or_default();
        let mut dirs: Vec<&str> = Vec::new();
        for dir in before_system.into_iter().chain(rest.split(':')) {
            if !dir.is_empty() && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        env.insert("PATH".to_owned(), dirs.join(":"));
    }
    for (k, v) in spec_env {
        env.insert(k.clone(), v.clone());
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
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

/// What the added parent directories contribute to a layer's bytes, for its cache key.
fn parents_key(parents: &[Entry]) -> String {
    let mut s = String::new();
    for p in parents {
        s.push_str(&format!(
            "{} {:o} {} {} {} {:?}\n",
            p.path, p.mode, p.uid, p.gid, p.mtime, p.xattrs
        ));
    }
    s
}

fn describe(objects: &[StoreObject]) -> String {
    let mut ids: Vec<&str> = objects.iter().map(|o| o.id.as_str()).collect();
    if ids.len() > 3 {
        let more = ids.len() - 3;
        ids.truncate(3);
        format!("{} and {more} more", ids.join(", "))
    } else {
        ids.join(", ")
    }
}

/// The image's name and tag, from the spec's canonical halves and the layers' contents.
pub fn name_and_tag(spec: &Spec, layers: &[LayerReport]) -> (String, String) {
    let diff_ids = |part: &str| -> Vec<u8> {
        layers
            .iter()
            .filter(|l| l.part == part)
            .flat_map(|l| l.diff_id.bytes().chain([b'\n']))
            .collect()
    };
    let base = hash_parts([
        b"strata-name-v1".as_slice(),
        spec.canonical(Part::Base).as_bytes(),
        spec.image.architecture.as_bytes(),
        &diff_ids("base"),
    ]);
    let user = hash_parts([
        b"strata-tag-v1".as_slice(),
        spec.canonical(Part::User).as_bytes(),
        spec.canonical_image().as_bytes(),
        &diff_ids("user"),
        &diff_ids("customisation"),
    ]);
    (
        format!("{}/{}", spec.image.name, &base[..32]),
        user[..32].to_owned(),
    )
}

/// Writes the configuration and manifest into the store and describes the finished image.
fn assemble(
    spec: &Spec,
    store: &Store,
    opts: &BuildOptions,
    layers: &[LayerReport],
    source_env: &[(String, String)],
    account: Option<&strata_coder::AccountFiles>,
) -> Result<BuiltImage, BuildError> {
    let created = image::rfc3339(opts.source_date_epoch);
    let c = &spec.config;
    let config = ImageConfig {
        created: Some(created.clone()),
        architecture: spec.image.architecture.clone(),
        os: "linux".into(),
        config: RunConfig {
            user: c.user.clone().or_else(|| account.map(|a| a.user.clone())),
            exposed_ports: c
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), Default::default()))
                .collect(),
            env: image_env(source_env, &c.env),
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            working_dir: c
                .workdir
                .clone()
                .or_else(|| account.map(|a| a.workdir.clone())),
            labels: c.labels.clone(),
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        },
        history: layers
            .iter()
            .map(|l| History {
                created: Some(created.clone()),
                created_by: Some(format!("strata ({} layer)", l.part)),
                comment: Some(l.objects.join(" ")),
            })
            .collect(),
    };
    let (config_bytes, config_digest) = image::to_blob(&config);
    store.put_blob(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.into(),
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest: config_digest.clone(),
            size: config_bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        },
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: opts.compression.media_type().into(),
                digest: l.digest.clone(),
                size: l.size,
                annotations: BTreeMap::new(),
                platform: None,
            })
            .collect(),
        annotations: spec.image.annotations.clone(),
    };
    let (manifest_bytes, manifest_digest) = image::to_blob(&manifest);
    store.put_blob(&manifest_bytes)?;
    let (name, tag) = name_and_tag(spec, layers);
    let mut blobs = Vec::new();
    for l in layers {
        let rec_digests = LayerDigests {
            diff_id: l.diff_id.clone(),
            digest: l.digest.clone(),
            size: l.size,
            uncompressed_size: l.uncompressed_size,
        };
        blobs.push(LayerBlob {
            path: store.blob_path(&l.digest)?,
            digests: rec_digests,
            compression: opts.compression,
            media_type: opts.compression.media_type().to_owned(),
        });
    }
    Ok(BuiltImage {
        manifest: manifest_bytes,
        manifest_media_type: MANIFEST_MEDIA_TYPE.to_owned(),
        manifest_digest,
        config: config_bytes,
        config_digest,
        layers: blobs,
        name,
        tag,
    })
}

/// Adds the workspace account of `[account]` / `[coder]` (see [`strata_coder::account`]) to the
/// customisation entries: `/etc/passwd`, `/etc/group` and `/etc/shadow` merged with what the
/// layers below and the sources' own customisation hold (the highest provider of a file wins),
/// the home directory, the sudoers drop-in. Its environment defaults (`LANG`) go below the
/// sources' environment; the returned files carry the `User` and `WorkingDir` defaults.
fn account_customisation(
    spec: &Spec,
    planned: &[PlannedLayer],
    customisation: &mut Vec<Entry>,
    source_env: &mut Vec<(String, String)>,
) -> Result<Option<strata_coder::AccountFiles>, BuildError> {
    let Some(account) = spec.account() else {
        return Ok(None);
    };
    let files = strata_coder::FileIndex::from_entries(
        planned
            .iter()
            .flat_map(|l| &l.objects)
            .flat_map(|o| o.tree.entries())
            .chain(customisation.iter()),
    );
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
    fn mixed_sources_put_the_system_path_first() {
        let nix = (
            "PATH".to_owned(),
            "/nix/profile/bin:/usr/local/bin:/usr/bin:/bin".to_owned(),
        );
        let deb = (
            "PATH".to_owned(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        );
        let want =
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/nix/profile/bin";
        assert_eq!(
            image_env(&[nix.clone(), deb.clone()], &BTreeMap::new()),
            [want]
        );
        assert_eq!(image_env(&[deb, nix.clone()], &BTreeMap::new()), [want]);
        assert_eq!(
            image_env(&[nix], &BTreeMap::new()),
            ["PATH=/nix/profile/bin:/usr/local/bin:/usr/bin:/bin"],
            "a single source keeps its own order"
        );
    }

    #[test]
    fn a_venv_bin_goes_before_the_system_path() {
        let deb = (
            "PATH".to_owned(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        );
        let nix = ("PATH".to_owned(), "/nix/profile/bin:/usr/bin".to_owned());
        let venv = (
            strata_source::PATH_BEFORE_SYSTEM.to_owned(),
            "/opt/venv/bin".to_owned(),
        );
        assert_eq!(
            image_env(&[deb.clone(), venv.clone()], &BTreeMap::new()),
            ["PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        );
        assert_eq!(
            image_env(
                &[nix, venv.clone(), deb.clone(), venv.clone()],
                &BTreeMap::new()
            ),
            [
                "PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/nix/profile/bin"
            ],
            "before the system and the Nix profile, once"
        );
        let spec_path = BTreeMap::from([("PATH".to_owned(), "/mine".to_owned())]);
        assert_eq!(
            image_env(&[deb, venv], &spec_path),
            ["PATH=/mine"],
            "[config] env still wins"
        );
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
