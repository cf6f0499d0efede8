//! The generated entries that make a Nix closure a usable container: the profile, `/bin/sh`,
//! `/usr/bin/env`, `/tmp`, the account files, the CA bundle and the FHS dynamic loader.

use std::collections::{BTreeMap, BTreeSet};

use strata_fstree::{Entry, EntryKind, ImagePath, Tree};
use strata_source::StoreObject;

/// Where the generated CA bundle link goes.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Bundle files of CA packages, relative to their store path (nixpkgs' `cacert` has both).
const CA_CANDIDATES: [&str; 2] = [
    "etc/ssl/certs/ca-bundle.crt",
    "etc/ssl/certs/ca-certificates.crt",
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
const SHADOW: &str = "root:!:1::::::\nnobody:!:1::::::\n";
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n\
                        networks: files\nprotocols: files\nservices: files\nethers: files\n\
                        rpc: files\n";

/// The dynamic loader of one architecture.
struct Loader {
    /// The loader's file name (`ld-linux-x86-64.so.2`).
    name: &'static str,
    /// The FHS directory programs expect it in (`lib64`).
    dir: &'static str,
    /// Directories the loader's built-in search path covers on common distributions, where the
    /// closure's libraries are linked so foreign programs find them.
    lib_dirs: &'static [&'static str],
}

fn loader(architecture: &str) -> Option<Loader> {
    match architecture {
        "amd64" => Some(Loader {
            name: "ld-linux-x86-64.so.2",
            dir: "lib64",
            lib_dirs: &["lib64", "lib/x86_64-linux-gnu"],
        }),
        "arm64" => Some(Loader {
            name: "ld-linux-aarch64.so.1",
            dir: "lib",
            lib_dirs: &["lib64", "lib/aarch64-linux-gnu"],
        }),
        _ => None,
    }
}

/// What the generated entries are made from.
pub struct Inputs<'a> {
    /// Every store object of the closure, sorted by id.
    pub objects: &'a [StoreObject],
    /// The requested outputs, in order (the profile's content, earlier wins).
    pub roots: &'a [String],
    /// Where the profile goes.
    pub profile: &'a ImagePath,
    /// OCI architecture of the image.
    pub architecture: &'a str,
    /// Whether to generate the global files (`/bin/sh`, `/usr/bin/env`, `/etc/*`, the loader).
    pub system_files: bool,
    /// Paths other content of the image provides; nothing is generated at or beneath them.
    pub provided: &'a BTreeSet<ImagePath>,
}

/// The generated entries and environment.
pub fn generate(inputs: &Inputs<'_>) -> (Vec<Entry>, Vec<(String, String)>) {
    let by_id: BTreeMap<&str, &StoreObject> =
        inputs.objects.iter().map(|o| (o.id.as_str(), o)).collect();
    let mut entries = Vec::new();
    let mut env = Vec::new();

    // The profile: a symlink forest of the roots.
    entries.push(Entry::directory(inputs.profile.clone(), 0o755));
    let sources: Vec<(&Tree, ImagePath)> = inputs
        .roots
        .iter()
        .filter_map(|r| {
            let obj = by_id.get(r.as_str())?;
            let path = ImagePath::new(r).ok()?;
            is_dir(&obj.tree, &path).then_some((&obj.tree, path))
        })
        .collect();
    forest(inputs.profile, &sources, &mut entries);
    env.push((
        "PATH".to_owned(),
        format!(
            "{}/bin:/usr/local/bin:/usr/bin:/bin",
            inputs.profile.absolute()
        ),
    ));

    for tmp in ["tmp", "var/tmp"] {
        entries.push(Entry::directory(image_path(tmp), 0o1777));
    }

    // Candidates for global links: the roots first, then the rest of the closure.
    let mut order: Vec<&StoreObject> = inputs
        .roots
        .iter()
        .filter_map(|r| by_id.get(r.as_str()).copied())
        .collect();
    order.extend(inputs.objects.iter());
    let find = |rel: &str| -> Option<String> {
        order.iter().find_map(|o| {
            let path = ImagePath::new(&o.id).ok()?.join(rel).ok()?;
            has(&o.tree, &path).then(|| path.absolute())
        })
    };
    let ca = CA_CANDIDATES.iter().find_map(|rel| find(rel));

    if inputs.system_files {
        for (link, rel) in [("bin/sh", "bin/sh"), ("usr/bin/env", "bin/env")] {
            if let Some(target) = find(rel) {
                entries.push(Entry::symlink(image_path(link), target));
            }
        }
        for (path, mode, text) in [
            ("etc/passwd", 0o644, PASSWD),
            ("etc/group", 0o644, GROUP),
            ("etc/shadow", 0o640, SHADOW),
            ("etc/nsswitch.conf", 0o644, NSSWITCH),
        ] {
            entries.push(Entry::inline_file(
                image_path(path),
                mode,
                text.as_bytes().to_vec(),
            ));
        }
        if let Some(ca) = &ca {
            entries.push(Entry::symlink(image_path(CA_BUNDLE), ca.clone()));
        }
        if let Some(loader) = loader(inputs.architecture) {
            glibc_links(inputs.objects, &loader, &mut entries);
        }
    }
    if let Some(ca) = ca {
        let bundle = image_path(CA_BUNDLE);
        let linked = !inputs.provided.iter().any(|p| bundle.starts_with(p));
        let file = if inputs.system_files && linked {
            CA_BUNDLE.to_owned()
        } else {
            ca
        };
        env.push(("SSL_CERT_FILE".to_owned(), file));
    }

    // What other content provides wins, and so does everything beneath it (a tree at `/etc`
    // brings its own `/etc/passwd`; one at `/bin` its own `/bin/sh`).
    entries.retain(|e| !inputs.provided.iter().any(|p| e.path.starts_with(p)));
    (entries, env)
}

/// The FHS loader path and the glibc's libraries in the directories the loader searches.
fn glibc_links(objects: &[StoreObject], loader: &Loader, out: &mut Vec<Entry>) {
    // Prefer a store path named glibc; otherwise the first (by id) that holds the loader.
    let with_loader = |o: &&StoreObject| {
        ImagePath::new(&o.id)
            .and_then(|p| p.join("lib")?.join(loader.name))
            .is_ok_and(|p| has(&o.tree, &p))
    };
    let glibc = objects
        .iter()
        .filter(with_loader)
        .min_by_key(|o| (!store_name(&o.id).starts_with("glibc-"), o.id.as_str()));
    let Some(glibc) = glibc else { return };
    let Ok(lib) = ImagePath::new(&glibc.id).and_then(|p| p.join("lib")) else {
        return;
    };
    out.push(Entry::symlink(
        image_path(&format!("{}/{}", loader.dir, loader.name)),
        format!("{}/{}", lib.absolute(), loader.name),
    ));
    for child in children(&glibc.tree, &lib) {
        let name = child.path.file_name();
        let shared = (name.starts_with("lib") || name.starts_with("ld-")) && name.contains(".so.");
        if !shared || matches!(child.kind, EntryKind::Directory) {
            continue;
        }
        for dir in loader.lib_dirs {
            let link = image_path(&format!("{dir}/{name}"));
            if link.file_name() == loader.name && *dir == loader.dir {
                continue;
            }
            out.push(Entry::symlink(link, child.path.absolute()));
        }
    }
}

/// Merges the directories `sources` into a symlink forest at `dest`, as Nix's `buildEnv` does:
/// a name present in one source (or not a directory in the first) becomes a link to it; a
/// directory present in several becomes a real directory merging them.
fn forest(dest: &ImagePath, sources: &[(&Tree, ImagePath)], out: &mut Vec<Entry>) {
    let mut names: BTreeMap<&str, Vec<(&Tree, &Entry)>> = BTreeMap::new();
    for (tree, dir) in sources {
        for child in children(tree, dir) {
            names
                .entry(child.path.file_name())
                .or_default()
                .push((tree, child));
        }
    }
    for (name, candidates) in names {
        let Ok(path) = dest.join(name) else { continue };
        let dirs: Vec<(&Tree, ImagePath)> = candidates
            .iter()
            .filter(|(_, e)| matches!(e.kind, EntryKind::Directory))
            .map(|(t, e)| (*t, e.path.clone()))
            .collect();
        let first = candidates[0].1;
        if dirs.len() > 1 && matches!(first.kind, EntryKind::Directory) {
            out.push(Entry::directory(path.clone(), 0o755));
            forest(&path, &dirs, out);
        } else {
            out.push(Entry::symlink(path, first.path.absolute()));
        }
    }
}

/// The entries directly inside `dir`.
fn children<'t>(tree: &'t Tree, dir: &ImagePath) -> impl Iterator<Item = &'t Entry> + 't {
    let entries = tree.entries();
    let start = match entries.binary_search_by(|e| e.path.cmp(dir)) {
        Ok(i) => i + 1,
        Err(i) => i,
    };
    let dir = dir.clone();
    entries[start..]
        .iter()
        .take_while({
            let dir = dir.clone();
            move |e| e.path.starts_with(&dir)
        })
        .filter(move |e| e.path.parent().as_ref() == Some(&dir))
}

fn find<'t>(tree: &'t Tree, path: &ImagePath) -> Option<&'t Entry> {
    let entries = tree.entries();
    entries
        .binary_search_by(|e| e.path.cmp(path))
        .ok()
        .map(|i| &entries[i])
}

fn has(tree: &Tree, path: &ImagePath) -> bool {
    find(tree, path).is_some()
}

fn is_dir(tree: &Tree, path: &ImagePath) -> bool {
    find(tree, path).is_some_and(|e| matches!(e.kind, EntryKind::Directory))
}

/// The name part of a store path (`hello-2.12` of `/nix/store/<hash>-hello-2.12`).
fn store_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split_once('-').map_or(base, |(_, name)| name)
}

/// A path known to be valid.
fn image_path(p: &str) -> ImagePath {
    ImagePath::new(p).unwrap_or_else(|_| unreachable!("`{p}` is a valid image path"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImagePath {
        image_path(s)
    }

    fn obj(id: &str, entries: Vec<Entry>) -> StoreObject {
        StoreObject {
            id: id.into(),
            tree: Tree::from_entries(entries).with_parents(),
            references: Vec::new(),
            cache_key: id.into(),
        }
    }

    fn file(path: &str) -> Entry {
        Entry::inline_file(p(path), 0o555, b"x".to_vec())
    }

    const HELLO: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello";
    const TOOLS: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-tools";
    const GLIBC: &str = "/nix/store/cccccccccccccccccccccccccccccccc-glibc-2.40";
    const CACERT: &str = "/nix/store/dddddddddddddddddddddddddddddddd-cacert";

    fn closure() -> Vec<StoreObject> {
        let mut objects = vec![
            obj(
                HELLO,
                vec![
                    file(&format!("{HELLO}/bin/hello")),
                    file(&format!("{HELLO}/share/man/man1/hello.1")),
                    file(&format!("{HELLO}/share/doc/hello/README")),
                ],
            ),
            obj(
                TOOLS,
                vec![
                    file(&format!("{TOOLS}/bin/busybox")),
                    Entry::symlink(p(&format!("{TOOLS}/bin/sh")), "busybox"),
                    Entry::symlink(p(&format!("{TOOLS}/bin/hello")), "busybox"),
                    Entry::symlink(p(&format!("{TOOLS}/bin/env")), "busybox"),
                    file(&format!("{TOOLS}/share/man/man1/busybox.1")),
                ],
            ),
            obj(
                GLIBC,
                vec![
                    file(&format!("{GLIBC}/lib/ld-linux-x86-64.so.2")),
                    file(&format!("{GLIBC}/lib/libc.so.6")),
                    file(&format!("{GLIBC}/lib/libc.so")),
                    file(&format!("{GLIBC}/lib/libm.so.6")),
                    Entry::directory(p(&format!("{GLIBC}/lib/gconv")), 0o555),
                ],
            ),
            obj(
                CACERT,
                vec![file(&format!("{CACERT}/etc/ssl/certs/ca-bundle.crt"))],
            ),
        ];
        objects.sort_by(|a, b| a.id.cmp(&b.id));
        objects
    }

    fn links(entries: &[Entry]) -> BTreeMap<String, String> {
        entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Symlink { target } => Some((e.path.absolute(), target.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn profile_forest_and_global_paths() {
        let objects = closure();
        let roots = vec![HELLO.to_owned(), TOOLS.to_owned()];
        let profile = p("/nix/var/nix/profiles/default");
        let provided = BTreeSet::new();
        let (entries, env) = generate(&Inputs {
            objects: &objects,
            roots: &roots,
            profile: &profile,
            architecture: "amd64",
            system_files: true,
            provided: &provided,
        });
        let l = links(&entries);
        let prof = "/nix/var/nix/profiles/default";
        // The first root wins a name; directories in several roots are merged.
        assert_eq!(
            l[&format!("{prof}/bin/hello")],
            format!("{HELLO}/bin/hello")
        );
        assert_eq!(l[&format!("{prof}/bin/sh")], format!("{TOOLS}/bin/sh"));
        assert_eq!(
            l[&format!("{prof}/share/doc")],
            format!("{HELLO}/share/doc")
        );
        assert_eq!(
            l[&format!("{prof}/share/man/man1/busybox.1")],
            format!("{TOOLS}/share/man/man1/busybox.1")
        );
        assert!(
            !l.contains_key(&format!("{prof}/share")),
            "merged, not linked"
        );

        assert_eq!(l["/bin/sh"], format!("{TOOLS}/bin/sh"));
        assert_eq!(l["/usr/bin/env"], format!("{TOOLS}/bin/env"));
        assert_eq!(
            l["/lib64/ld-linux-x86-64.so.2"],
            format!("{GLIBC}/lib/ld-linux-x86-64.so.2")
        );
        assert_eq!(
            l["/lib/x86_64-linux-gnu/libc.so.6"],
            format!("{GLIBC}/lib/libc.so.6")
        );
        assert_eq!(l["/lib64/libm.so.6"], format!("{GLIBC}/lib/libm.so.6"));
        assert!(
            !l.contains_key("/lib64/libc.so"),
            "linker scripts are not linked"
        );
        assert!(!l.contains_key("/lib64/gconv"));
        assert_eq!(
            l[CA_BUNDLE],
            format!("{CACERT}/etc/ssl/certs/ca-bundle.crt")
        );

        let modes: BTreeMap<String, u32> = entries
            .iter()
            .map(|e| (e.path.absolute(), e.mode))
            .collect();
        assert_eq!(modes["/tmp"], 0o1777);
        assert_eq!(modes["/var/tmp"], 0o1777);
        assert_eq!(modes["/etc/shadow"], 0o640);
        assert!(modes.contains_key("/etc/passwd") && modes.contains_key("/etc/nsswitch.conf"));

        assert_eq!(
            env,
            [
                (
                    "PATH".to_owned(),
                    format!("{prof}/bin:/usr/local/bin:/usr/bin:/bin")
                ),
                ("SSL_CERT_FILE".to_owned(), CA_BUNDLE.to_owned()),
            ]
        );
    }

    #[test]
    fn without_system_files_only_the_profile_and_tmp_are_generated() {
        let objects = closure();
        let roots = vec![HELLO.to_owned()];
        let profile = p("/home/dev/.nix-profile");
        let provided: BTreeSet<ImagePath> = [p("var/tmp"), p("home/dev/.nix-profile/share")].into();
        let (entries, env) = generate(&Inputs {
            objects: &objects,
            roots: &roots,
            profile: &profile,
            architecture: "arm64",
            system_files: false,
            provided: &provided,
        });
        let paths: Vec<String> = entries.iter().map(|e| e.path.absolute()).collect();
        assert_eq!(
            paths,
            [
                "/home/dev/.nix-profile",
                "/home/dev/.nix-profile/bin",
                "/tmp"
            ]
        );
        assert_eq!(
            env[1],
            (
                "SSL_CERT_FILE".to_owned(),
                format!("{CACERT}/etc/ssl/certs/ca-bundle.crt")
            )
        );
    }

    #[test]
    fn arm64_loader_goes_to_lib() {
        let glibc = "/nix/store/cccccccccccccccccccccccccccccccc-glibc-2.40";
        let objects = vec![obj(
            glibc,
            vec![file(&format!("{glibc}/lib/ld-linux-aarch64.so.1"))],
        )];
        let profile = p("/p");
        let provided = BTreeSet::new();
        let (entries, _) = generate(&Inputs {
            objects: &objects,
            roots: &[],
            profile: &profile,
            architecture: "arm64",
            system_files: true,
            provided: &provided,
        });
        let l = links(&entries);
        assert_eq!(
            l["/lib/ld-linux-aarch64.so.1"],
            format!("{glibc}/lib/ld-linux-aarch64.so.1")
        );
        assert!(!l.contains_key("/bin/sh"), "no shell in the closure");
    }
}
