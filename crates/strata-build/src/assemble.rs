//! Stage 5: the image configuration and manifest, written into the store.

use std::collections::BTreeMap;

use strata_oci::image::{
    self, CONFIG_MEDIA_TYPE, Descriptor, History, ImageConfig, MANIFEST_MEDIA_TYPE, Manifest,
    RootFs, RunConfig,
};
use strata_oci::layer::LayerDigests;
use strata_oci::output::{BuiltImage, LayerBlob};
use strata_source::hash_parts;
use strata_spec::{Part, Spec};
use strata_store::Store;

use crate::{BuildError, BuildOptions, LayerReport};

/// The image environment: what the sources need, then the spec's `[config] env` on top.
/// `PATH` entries from several sources are joined in order, without repeats; directories a
/// source marks [`strata_source::PATH_BEFORE_SYSTEM`] (a venv's `bin`) lead.
pub(crate) fn image_env(
    source_env: &[(String, String)],
    spec_env: &BTreeMap<String, String>,
) -> Vec<String> {
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

/// The image's name and tag, from the spec's canonical halves and the layers' contents.
pub fn name_and_tag(spec: &Spec, layers: &[LayerReport]) -> (String, String) {
    let diff_ids = |part: &str| -> Vec<u8> {
        // A configured image's user half is its `user` and `user-content` layers.
        let of = |l: &str| l == part || (part == "user" && l == "user-content");
        layers
            .iter()
            .filter(|l| of(l.part))
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
pub(crate) fn assemble(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
