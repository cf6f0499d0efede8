//! Walking a parsed TOML document by hand, validating every key and value and remembering where
//! each one was written.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{Item, Table, TableLike, Value};

use crate::check::{self, Rejection};
use crate::error::{Diagnostic, Location, Problem, SpecError};
use crate::{
    AccountSection, BootSection, CoderSection, ConfigSection, DEFAULT_NAME, DebianRepo,
    DebianSection, FetchEntry, Half, ImageSection, NixSection, PythonSection, ServicesSection,
    Spec, TreeEntry,
};

const ROOT_KEYS: &[&str] = &[
    "image", "base", "user", "config", "account", "coder", "services", "boot",
];
const BOOT_KEYS: &[&str] = &[
    "kernel",
    "init",
    "cmdline",
    "root_size",
    "free_space",
    "hostname",
    "cloud_init",
    "volume_id",
    "label",
    "installer",
];
const SERVICES_KEYS: &[&str] = &["enable", "disable"];
const ACCOUNT_KEYS: &[&str] = &[
    "name", "uid", "gid", "home", "shell", "sudo", "groups", "gecos",
];
const CODER_KEYS: &[&str] = &["code_server", "startup_script"];
const ANNOTATION_KEYS: &[&str] = &[
    "title",
    "description",
    "source",
    "url",
    "documentation",
    "authors",
    "vendor",
    "licenses",
    "version",
    "revision",
];
const IMAGE_KEYS: &[&str] = &[
    "name",
    "architecture",
    "title",
    "description",
    "source",
    "url",
    "documentation",
    "authors",
    "vendor",
    "licenses",
    "version",
    "revision",
];
const HALF_KEYS: &[&str] = &["tree", "debian", "nix", "fetch", "python", "links"];
const PYTHON_KEYS: &[&str] = &["packages", "venv", "index_url"];
const FETCH_KEYS: &[&str] = &[
    "url",
    "sha256",
    "dest",
    "mode",
    "uid",
    "gid",
    "unpack",
    "strip_components",
];
/// The `unpack` values (the download source's archive formats).
const UNPACK_NAMES: &[&str] = &[
    "tar.gz", "tgz", "tar.xz", "tar.zst", "tar.bz2", "tar", "zip",
];
const TREE_KEYS: &[&str] = &["src", "dest", "mode", "uid", "gid"];
const DEBIAN_KEYS: &[&str] = &[
    "packages",
    "suite",
    "mirror",
    "security_mirror",
    "updates",
    "components",
    "keyring",
    "recommends",
    "essential",
    "configure",
    "repos",
    "debconf",
];
const REPO_KEYS: &[&str] = &[
    "name",
    "uri",
    "ppa",
    "suites",
    "components",
    "keyring",
    "priority",
    "architectures",
];
const NIX_KEYS: &[&str] = &["installables", "paths", "profile", "database"];
const CONFIG_KEYS: &[&str] = &[
    "env",
    "entrypoint",
    "cmd",
    "workdir",
    "user",
    "labels",
    "exposed_ports",
];

/// Byte offsets of line starts, to turn spans into line and column.
struct Lines<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, starts }
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }
}

/// A TOML node, whichever container it came from.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Value(v) => v.span(),
            Node::Table(t) => t.span(),
        }
    }

    fn value(self) -> Option<&'a Value> {
        match self {
            Node::Item(i) => i.as_value(),
            Node::Value(v) => Some(v),
            Node::Table(_) => None,
        }
    }

    fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
            Node::Table(t) => Some(t),
        }
    }

    fn elements(self) -> Option<Vec<Node<'a>>> {
        if let Node::Item(Item::ArrayOfTables(aot)) = self {
            return Some(aot.iter().map(Node::Table).collect());
        }
        self.value()
            .and_then(Value::as_array)
            .map(|a| a.iter().map(Node::Value).collect())
    }

    /// The TOML type, with an article, for messages.
    fn found(self) -> &'static str {
        match self {
            Node::Item(Item::None) => "nothing",
            Node::Item(Item::Table(_)) | Node::Table(_) => "a table",
            Node::Item(Item::ArrayOfTables(_)) => "an array of tables",
            Node::Item(Item::Value(v)) | Node::Value(v) => match v {
                Value::String(_) => "a string",
                Value::Integer(_) => "an integer",
                Value::Float(_) => "a float",
                Value::Boolean(_) => "a boolean",
                Value::Datetime(_) => "a date-time",
                Value::Array(_) => "an array",
                Value::InlineTable(_) => "an inline table",
            },
        }
    }
}

/// A key (or array element) and its value, with the dotted path and positions.
struct Field<'a> {
    path: String,
    node: Node<'a>,
    /// Where the key is written (for arrays elements: the element itself).
    key_loc: Location,
    /// Where the value is written.
    loc: Location,
}

/// The known keys of a validated table.
struct Fields<'a> {
    path: String,
    loc: Location,
    items: Vec<(&'static str, Field<'a>)>,
}

impl<'a> Fields<'a> {
    fn take(&mut self, name: &str) -> Option<Field<'a>> {
        let i = self.items.iter().position(|(k, _)| *k == name)?;
        Some(self.items.remove(i).1)
    }
}

/// Appends a key to a dotted path, quoting it unless it is a bare TOML key.
fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

struct Parser<'t> {
    file: PathBuf,
    lines: Lines<'t>,
    errors: Vec<Diagnostic>,
}

impl<'t> Parser<'t> {
    fn locate(&self, span: Option<Range<usize>>, fallback: &Location) -> Location {
        match span {
            Some(span) => {
                let (line, column) = self.lines.position(span.start);
                Location {
                    file: self.file.clone(),
                    line,
                    column,
                }
            }
            None => fallback.clone(),
        }
    }

    fn report(&mut self, location: &Location, key: &str, problem: Problem) {
        self.errors.push(Diagnostic {
            location: location.clone(),
            key: key.to_owned(),
            problem,
        });
    }

    fn wrong_type(&mut self, f: &Field<'_>, expected: &str) {
        self.report(
            &f.loc,
            &f.path,
            Problem::WrongType {
                expected: expected.to_owned(),
                found: f.node.found(),
            },
        );
    }

    fn missing(&mut self, t: &Fields<'_>, key: &str, hint: &str) {
        self.report(
            &t.loc,
            &join(&t.path, key),
            Problem::Missing {
                hint: hint.to_owned(),
            },
        );
    }

    fn checked<T>(&mut self, f: &Field<'_>, result: Result<T, Rejection>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err((reason, hint)) => {
                self.report(&f.loc, &f.path, Problem::Invalid { reason, hint });
                None
            }
        }
    }

    /// The entries of a table, each with its positions; `None` (reported) if not a table.
    fn entries<'a>(&mut self, f: &Field<'a>, expected: &str) -> Option<Vec<(String, Field<'a>)>> {
        let Some(table) = f.node.table_like() else {
            self.wrong_type(f, expected);
            return None;
        };
        let mut out = Vec::new();
        for (name, item) in table.iter() {
            let key_span = table.key(name).and_then(|k| k.span());
            let key_loc = self.locate(key_span, &f.loc);
            let loc = self.locate(item.span(), &key_loc);
            out.push((
                name.to_owned(),
                Field {
                    path: join(&f.path, name),
                    node: Node::Item(item),
                    key_loc,
                    loc,
                },
            ));
        }
        Some(out)
    }

    /// A table with a fixed set of keys; unknown keys are reported.
    fn table<'a>(
        &mut self,
        f: &Field<'a>,
        expected: &str,
        allowed: &'static [&'static str],
    ) -> Option<Fields<'a>> {
        let entries = self.entries(f, expected)?;
        let mut items = Vec::new();
        for (name, field) in entries {
            match allowed.iter().find(|k| **k == name) {
                Some(k) => items.push((*k, field)),
                None => self.report(
                    &field.key_loc,
                    &field.path,
                    Problem::UnknownKey {
                        expected: allowed.to_vec(),
                    },
                ),
            }
        }
        Some(Fields {
            path: f.path.clone(),
            loc: f.key_loc.clone(),
            items,
        })
    }

    fn array<'a>(&mut self, f: &Field<'a>, expected: &str) -> Option<Vec<Field<'a>>> {
        let Some(elements) = f.node.elements() else {
            self.wrong_type(f, expected);
            return None;
        };
        Some(
            elements
                .into_iter()
                .enumerate()
                .map(|(i, node)| {
                    let loc = self.locate(node.span(), &f.loc);
                    Field {
                        path: format!("{}[{i}]", f.path),
                        node,
                        key_loc: loc.clone(),
                        loc,
                    }
                })
                .collect(),
        )
    }

    fn string<'a>(&mut self, f: &Field<'a>, expected: &str) -> Option<&'a str> {
        match f.node.value().and_then(Value::as_str) {
            Some(s) => Some(s),
            None => {
                self.wrong_type(f, expected);
                None
            }
        }
    }

    fn string_with<T>(
        &mut self,
        f: &Field<'_>,
        expected: &str,
        check: impl Fn(&str) -> Result<T, Rejection>,
    ) -> Option<T> {
        let s = self.string(f, expected)?;
        self.checked(f, check(s))
    }

    fn boolean(&mut self, f: &Field<'_>) -> Option<bool> {
        match f.node.value().and_then(Value::as_bool) {
            Some(b) => Some(b),
            None => {
                self.wrong_type(f, "a boolean (true or false)");
                None
            }
        }
    }

    fn integer_with<T>(
        &mut self,
        f: &Field<'_>,
        expected: &str,
        check: impl Fn(i64) -> Result<T, Rejection>,
    ) -> Option<T> {
        match f.node.value().and_then(Value::as_integer) {
            Some(n) => self.checked(f, check(n)),
            None => {
                self.wrong_type(f, expected);
                None
            }
        }
    }

    /// An array of strings, each checked; bad elements are reported and left out.
    fn strings_with<T>(
        &mut self,
        f: &Field<'_>,
        expected: &str,
        check: impl Fn(&str) -> Result<T, Rejection>,
    ) -> Option<Vec<T>> {
        let elements = self.array(f, &format!("an array of strings like {expected}"))?;
        let mut out = Vec::new();
        for e in &elements {
            if let Some(v) = self.string_with(e, "a string", &check) {
                out.push(v);
            }
        }
        Some(out)
    }

    /// A table whose keys are free-form and whose values are strings.
    fn string_map(
        &mut self,
        f: &Field<'_>,
        expected: &str,
        check_key: impl Fn(&str) -> Result<String, Rejection>,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (name, field) in self.entries(f, expected).unwrap_or_default() {
            let key = match check_key(&name) {
                Ok(k) => Some(k),
                Err((reason, hint)) => {
                    self.report(
                        &field.key_loc,
                        &field.path,
                        Problem::Invalid { reason, hint },
                    );
                    None
                }
            };
            let value = self.string_with(&field, "a string", check::no_nul);
            if let (Some(k), Some(v)) = (key, value) {
                out.insert(k, v);
            }
        }
        out
    }

    fn image(&mut self, f: Option<Field<'_>>) -> ImageSection {
        let mut image = ImageSection {
            name: DEFAULT_NAME.to_owned(),
            architecture: crate::host_architecture().to_owned(),
            annotations: BTreeMap::new(),
        };
        let Some(f) = f else { return image };
        let Some(mut t) = self.table(&f, "a table like [image]", IMAGE_KEYS) else {
            return image;
        };
        if let Some(name) = t.take("name") {
            let name = self.string_with(&name, "a string like \"strata\"", check::repository);
            image.name = name.unwrap_or_default();
        }
        if let Some(arch) = t.take("architecture") {
            let arch = self.string_with(&arch, "a string like \"amd64\"", check::architecture);
            image.architecture = arch.unwrap_or_default();
        }
        for key in ANNOTATION_KEYS {
            if let Some(field) = t.take(key)
                && let Some(value) = self.string_with(&field, "a string", check::no_nul)
            {
                image
                    .annotations
                    .insert(format!("org.opencontainers.image.{key}"), value);
            }
        }
        image
    }

    fn half(&mut self, f: Option<Field<'_>>) -> Half {
        let mut half = Half::default();
        let Some(f) = f else { return half };
        let what = format!("a table like [{}]", f.path);
        let Some(mut t) = self.table(&f, &what, HALF_KEYS) else {
            return half;
        };
        if let Some(tree) = t.take("tree") {
            half.tree = self.tree(&tree);
        }
        if let Some(debian) = t.take("debian") {
            half.debian = self.debian(&debian);
        }
        if let Some(nix) = t.take("nix") {
            half.nix = self.nix(&nix);
        }
        if let Some(fetch) = t.take("fetch") {
            half.fetch = self.fetch(&fetch);
        }
        if let Some(python) = t.take("python") {
            half.python = self.python(&python);
        }
        if let Some(links) = t.take("links") {
            let map = self.string_map(
                &links,
                "a table like { \"/usr/bin/bat\" = \"batcat\" }",
                |k| check::image_path(k, "/usr/bin/bat").map(|p| p.absolute()),
            );
            for (path, target) in map {
                if let (Ok(p), false) = (strata_fstree::ImagePath::new(&path), target.is_empty()) {
                    half.links.push((p, target));
                } else {
                    self.report(
                        &links.loc,
                        &join(&links.path, &path),
                        Problem::Invalid {
                            reason: "the link target is empty".to_owned(),
                            hint: "write where the link points, such as \"batcat\"".to_owned(),
                        },
                    );
                }
            }
        }
        half
    }

    fn python(&mut self, f: &Field<'_>) -> Option<PythonSection> {
        let mut t = self.table(
            f,
            "a table like { packages = [\"rich\", \"requests>=2.31\"] }",
            PYTHON_KEYS,
        )?;
        let mut p = PythonSection {
            packages: Vec::new(),
            venv: None,
            index_url: None,
            location: f.loc.clone(),
            key: f.path.clone(),
        };
        if let Some(list) = t.take("packages") {
            p.packages = self
                .strings_with(
                    &list,
                    "[\"rich\", \"requests>=2.31\"]",
                    check::python_requirement,
                )
                .unwrap_or_default();
        }
        if let Some(v) = t.take("venv") {
            p.venv = self.string_with(&v, "a string like \"/opt/venv\"", |s| {
                check::image_path(s, crate::DEFAULT_PYTHON_VENV)
            });
        }
        if let Some(u) = t.take("index_url") {
            p.index_url = self.string_with(
                &u,
                "a string like \"https://pypi.org/simple\"",
                check::download_url,
            );
        }
        Some(p)
    }

    fn fetch(&mut self, f: &Field<'_>) -> Vec<FetchEntry> {
        const EXAMPLE: &str = "{ url = \"https://example.org/tool\", sha256 = \"...\", dest = \"/usr/local/bin/tool\" }";
        let Some(elements) = self.array(f, &format!("an array of tables like [{EXAMPLE}]")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in &elements {
            let Some(mut t) = self.table(e, &format!("a table like {EXAMPLE}"), FETCH_KEYS) else {
                continue;
            };
            let url = match t.take("url") {
                Some(u) => self.string_with(
                    &u,
                    "a string like \"https://example.org/tool.tar.gz\"",
                    check::download_url,
                ),
                None => {
                    self.missing(&t, "url", "add url = \"https://...\": what to download");
                    None
                }
            };
            let sha256 = t
                .take("sha256")
                .and_then(|s| self.string_with(&s, "a string of 64 hex digits", check::sha256));
            let dest = match t.take("dest") {
                Some(dest) => {
                    self.string_with(&dest, "a string like \"/usr/local/bin/tool\"", |s| {
                        check::image_path(s, "/usr/local/bin/tool")
                    })
                }
                None => {
                    self.missing(
                        &t,
                        "dest",
                        "add dest = \"/...\": the absolute path in the image of the file, or of \
                         the directory an archive is unpacked into",
                    );
                    None
                }
            };
            let mode = t.take("mode").and_then(|m| self.mode(&m));
            let uid = t
                .take("uid")
                .and_then(|u| self.integer_with(&u, "an integer user id like 1000", check::id));
            let gid = t
                .take("gid")
                .and_then(|g| self.integer_with(&g, "an integer group id like 1000", check::id));
            let unpack = t.take("unpack").and_then(|u| {
                self.string_with(&u, "a string like \"tar.gz\"", |s| {
                    if UNPACK_NAMES.contains(&s) {
                        Ok(s.to_owned())
                    } else {
                        Err((
                            format!("`{s}` is not an archive format strata unpacks"),
                            format!("write one of {}", UNPACK_NAMES.join(", ")),
                        ))
                    }
                })
            });
            let unpack = unpack.map(|u| if u == "tgz" { "tar.gz".to_owned() } else { u });
            let strip = t.take("strip_components").and_then(|s| {
                let n = self.integer_with(&s, "a small integer like 1", |n| {
                    u32::try_from(n).ok().filter(|n| *n <= 64).ok_or_else(|| {
                        (
                            format!("{n} is not a number of path components"),
                            "write a number from 0 to 64".to_owned(),
                        )
                    })
                })?;
                if unpack.is_none() {
                    self.checked::<()>(
                        &s,
                        Err((
                            "strip_components needs unpack".to_owned(),
                            "add unpack = \"tar.gz\" (or the archive's format), or remove the key"
                                .to_owned(),
                        )),
                    );
                }
                Some(n)
            });
            if let (Some(url), Some(dest)) = (url, dest) {
                out.push(FetchEntry {
                    url,
                    sha256,
                    dest,
                    mode,
                    uid,
                    gid,
                    unpack,
                    strip_components: strip,
                    location: e.loc.clone(),
                    key: e.path.clone(),
                });
            }
        }
        out
    }

    fn tree(&mut self, f: &Field<'_>) -> Vec<TreeEntry> {
        const EXAMPLE: &str = "{ src = \"files/hello.sh\", dest = \"/usr/local/bin/hello\" }";
        let Some(elements) = self.array(f, &format!("an array of tables like [{EXAMPLE}]")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in &elements {
            let Some(mut t) = self.table(e, &format!("a table like {EXAMPLE}"), TREE_KEYS) else {
                continue;
            };
            let src = match t.take("src") {
                Some(src) => self.string_with(&src, "a string like \"files/hello.sh\"", |s| {
                    check::relative_path(s, "files/hello.sh").map(|_| PathBuf::from(s))
                }),
                None => {
                    self.missing(
                        &t,
                        "src",
                        "add src = \"...\": the host file or directory to copy, relative to the \
                         spec file's directory",
                    );
                    None
                }
            };
            let dest = match t.take("dest") {
                Some(dest) => {
                    self.string_with(&dest, "a string like \"/usr/local/bin/hello\"", |s| {
                        check::tree_dest(s, "/usr/local/bin/hello")
                    })
                }
                None => {
                    self.missing(
                        &t,
                        "dest",
                        "add dest = \"/...\": the absolute path in the image to copy src to",
                    );
                    None
                }
            };
            let mode = t.take("mode").and_then(|m| self.mode(&m));
            let uid = t
                .take("uid")
                .map(|u| self.integer_with(&u, "an integer user id like 1000", check::id));
            let gid = t
                .take("gid")
                .map(|g| self.integer_with(&g, "an integer group id like 1000", check::id));
            if let (Some(src), Some(dest)) = (src, dest) {
                out.push(TreeEntry {
                    src,
                    dest,
                    mode,
                    uid: uid.flatten(),
                    gid: gid.flatten(),
                    location: e.loc.clone(),
                    key: e.path.clone(),
                });
            }
        }
        out
    }

    fn mode(&mut self, f: &Field<'_>) -> Option<u32> {
        match f.node.value() {
            Some(Value::Integer(n)) => self.checked(f, check::mode_int(*n.value())),
            Some(Value::String(s)) => self.checked(f, check::mode_str(s.value())),
            _ => {
                self.wrong_type(
                    f,
                    "an octal integer like 0o755 or a string of octal digits like \"0755\"",
                );
                None
            }
        }
    }

    fn debian(&mut self, f: &Field<'_>) -> Option<DebianSection> {
        let mut t = self.table(
            f,
            "a table like { packages = [\"bash\"], suite = \"bookworm\" }",
            DEBIAN_KEYS,
        )?;
        let mut d = DebianSection {
            packages: Vec::new(),
            suite: None,
            mirror: None,
            security_mirror: None,
            updates: None,
            components: None,
            keyring: None,
            recommends: None,
            essential: None,
            configure: None,
            repos: Vec::new(),
            debconf: Vec::new(),
            location: f.loc.clone(),
            key: f.path.clone(),
        };
        if let Some(p) = t.take("packages") {
            d.packages = self
                .strings_with(&p, "[\"bash\", \"git\"]", check::debian_package)
                .unwrap_or_default();
        }
        if let Some(s) = t.take("suite") {
            d.suite = self.string_with(&s, "a string like \"bookworm\"", check::debian_suite);
        }
        let url = "a string like \"http://deb.debian.org/debian\"";
        if let Some(m) = t.take("mirror") {
            d.mirror = self.string_with(&m, url, check::mirror_url);
        }
        if let Some(m) = t.take("security_mirror") {
            d.security_mirror = self.string_with(&m, url, check::mirror_url);
        }
        if let Some(u) = t.take("updates") {
            d.updates = self.boolean(&u);
        }
        if let Some(c) = t.take("components")
            && let Some(list) =
                self.strings_with(&c, "[\"main\", \"contrib\"]", check::debian_component)
        {
            if list.is_empty() {
                self.checked::<()>(
                    &c,
                    Err((
                        "the component list is empty".to_owned(),
                        "list at least one component, e.g. [\"main\"], or remove the key"
                            .to_owned(),
                    )),
                );
            } else {
                d.components = Some(list);
            }
        }
        if let Some(k) = t.take("keyring") {
            d.keyring = self.string_with(&k, "a string like \"keys/archive.gpg\"", |s| {
                check::relative_path(s, "keys/archive.gpg").map(PathBuf::from)
            });
        }
        if let Some(b) = t.take("recommends") {
            d.recommends = self.boolean(&b);
        }
        if let Some(b) = t.take("essential") {
            d.essential = self.boolean(&b);
        }
        if let Some(b) = t.take("configure") {
            d.configure = self.boolean(&b);
        }
        if let Some(c) = t.take("debconf") {
            d.debconf = self
                .strings_with(
                    &c,
                    "[\"tzdata tzdata/Areas select Europe\"]",
                    check::debconf_line,
                )
                .unwrap_or_default();
        }
        if let Some(r) = t.take("repos") {
            let expected = "an array of tables like [[base.debian.repos]]";
            for e in self.array(&r, expected).unwrap_or_default() {
                if let Some(repo) = self.repo(&e) {
                    d.repos.push(repo);
                }
            }
        }
        Some(d)
    }

    fn repo(&mut self, f: &Field<'_>) -> Option<DebianRepo> {
        let mut t = self.table(
            f,
            "a table like { uri = \"https://download.docker.com/linux/debian\", keyring = \"docker.asc\" }",
            REPO_KEYS,
        )?;
        let url = "a string like \"https://download.docker.com/linux/debian\"";
        let uri = t.take("uri");
        let ppa = t.take("ppa");
        let (uri, default_name) = match (uri, ppa) {
            (Some(u), None) => {
                let uri = self.string_with(&u, url, check::mirror_url)?;
                let name = derived_name(&uri);
                (uri, name)
            }
            (None, Some(p)) => {
                let (owner, name) =
                    self.string_with(&p, "a string like \"git-core/ppa\"", check::ppa)?;
                let uri = format!("https://ppa.launchpadcontent.net/{owner}/{name}/ubuntu");
                (uri, derived_name(&format!("ppa-{owner}-{name}")))
            }
            (Some(u), Some(_)) => {
                self.checked::<()>(
                    &u,
                    Err((
                        "a repository has both `uri` and `ppa`".to_owned(),
                        "keep one: `ppa = \"owner/name\"` is short for the PPA's uri".to_owned(),
                    )),
                );
                return None;
            }
            (None, None) => {
                self.missing(
                    &t,
                    "uri",
                    "the repository's base URI, or `ppa = \"owner/name\"`",
                );
                return None;
            }
        };
        let name = match t.take("name") {
            Some(n) => self.string_with(&n, "a string like \"docker\"", check::repo_name)?,
            None => default_name,
        };
        let mut suites = None;
        if let Some(s) = t.take("suites") {
            let list = self.strings_with(&s, "[\"bookworm\"]", check::debian_suite)?;
            if list.is_empty() {
                self.checked::<()>(
                    &s,
                    Err((
                        "the suite list is empty".to_owned(),
                        "list at least one suite, e.g. [\"bookworm\"], or remove the key"
                            .to_owned(),
                    )),
                );
                return None;
            }
            suites = Some(list);
        }
        let mut components = vec!["main".to_owned()];
        if let Some(c) = t.take("components") {
            let list = self.strings_with(&c, "[\"main\", \"stable\"]", check::debian_component)?;
            if list.is_empty() {
                self.checked::<()>(
                    &c,
                    Err((
                        "the component list is empty".to_owned(),
                        "list at least one component, e.g. [\"main\"], or remove the key"
                            .to_owned(),
                    )),
                );
                return None;
            }
            components = list;
        }
        let keyring = match t.take("keyring") {
            Some(k) => self.string_with(&k, "a string like \"keys/vendor.asc\"", |s| {
                check::relative_path(s, "keys/vendor.asc").map(PathBuf::from)
            })?,
            None => {
                self.missing(
                    &t,
                    "keyring",
                    "every added repository is verified with its own key: the path of its \
                     armored or binary OpenPGP keyring, relative to the spec",
                );
                return None;
            }
        };
        let mut priority = 500;
        if let Some(p) = t.take("priority") {
            priority = self.integer_with(&p, "an integer like 990 (apt pin priority)", |n| {
                i32::try_from(n)
                    .ok()
                    .filter(|n| (-10_000..=10_000).contains(n))
                    .ok_or((
                        format!("{n} is out of range"),
                        "write an apt pin priority between -10000 and 10000, such as 990"
                            .to_owned(),
                    ))
            })?;
        }
        let mut architectures = Vec::new();
        if let Some(a) = t.take("architectures") {
            architectures = self.strings_with(&a, "[\"amd64\", \"arm64\"]", check::dpkg_arch)?;
        }
        Some(DebianRepo {
            name,
            uri,
            suites,
            components,
            keyring,
            priority,
            architectures,
            location: f.loc.clone(),
            key: f.path.clone(),
        })
    }

    /// Checks across both halves: repository names are unique, and an Ubuntu suite names
    /// its keyring (Debian ships no Ubuntu keys).
    fn debian_halves(&mut self, base: &Half, user: &Half) {
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for d in [&base.debian, &user.debian].into_iter().flatten() {
            for r in &d.repos {
                if let Some(first) = names.insert(r.name.clone(), r.key.clone()) {
                    self.report(
                        &r.location,
                        &r.key,
                        Problem::Invalid {
                            reason: format!(
                                "repository name `{}` is already used by {first}",
                                r.name
                            ),
                            hint: "give one of them another `name`".to_owned(),
                        },
                    );
                }
            }
        }
        for (d, inherit) in [(&base.debian, None), (&user.debian, base.debian.as_ref())] {
            let Some(d) = d else { continue };
            let s = d.effective(inherit);
            if check::is_ubuntu_suite(&s.suite) && s.keyring.is_none() {
                self.report(
                    &d.location,
                    &join(&d.key, "keyring"),
                    Problem::Missing {
                        hint: format!(
                            "suite `{}` is Ubuntu's, and Debian ships no Ubuntu keyring: set \
                             `keyring` to a copy of Ubuntu's archive keyring \
                             (/usr/share/keyrings/ubuntu-archive-keyring.gpg on an Ubuntu machine)",
                            s.suite
                        ),
                    },
                );
            }
        }
    }

    fn nix(&mut self, f: &Field<'_>) -> Option<NixSection> {
        let mut t = self.table(f, "a table like { installables = [\".#hello\"] }", NIX_KEYS)?;
        let mut n = NixSection {
            installables: Vec::new(),
            paths: Vec::new(),
            profile: None,
            database: false,
            location: f.loc.clone(),
            key: f.path.clone(),
        };
        if let Some(d) = t.take("database") {
            n.database = self.boolean(&d).unwrap_or(false);
        }
        if let Some(i) = t.take("installables") {
            n.installables = self
                .strings_with(
                    &i,
                    "[\".#hello\", \"./default.nix\"]",
                    check::nix_installable,
                )
                .unwrap_or_default();
        }
        if let Some(p) = t.take("paths") {
            n.paths = self
                .strings_with(
                    &p,
                    "[\"/nix/store/<hash>-hello-2.12.1\"]",
                    check::nix_store_path,
                )
                .unwrap_or_default();
        }
        if let Some(p) = t.take("profile") {
            n.profile = self.string_with(&p, "a string like \"/run/current-system/sw\"", |s| {
                check::image_path(s, crate::DEFAULT_NIX_PROFILE)
            });
        }
        Some(n)
    }

    fn config(&mut self, f: Option<Field<'_>>) -> ConfigSection {
        let mut c = ConfigSection::default();
        let Some(f) = f else { return c };
        let Some(mut t) = self.table(&f, "a table like [config]", CONFIG_KEYS) else {
            return c;
        };
        if let Some(env) = t.take("env") {
            c.env = self.string_map(
                &env,
                "a table of strings like { PATH = \"/usr/bin:/bin\" }",
                check::env_name,
            );
        }
        if let Some(e) = t.take("entrypoint") {
            c.entrypoint = self.strings_with(&e, "[\"/bin/bash\", \"-l\"]", check::no_nul);
        }
        if let Some(e) = t.take("cmd") {
            c.cmd = self.strings_with(&e, "[\"/bin/bash\"]", check::no_nul);
        }
        if let Some(w) = t.take("workdir") {
            c.workdir = self.string_with(&w, "a string like \"/home/dev\"", check::image_dir);
        }
        if let Some(u) = t.take("user") {
            c.user = self.string_with(
                &u,
                "a string like \"1000:1000\" or \"dev\"",
                check::config_user,
            );
        }
        if let Some(l) = t.take("labels") {
            c.labels = self.string_map(&l, "a table of strings like { team = \"infra\" }", |k| {
                if k.is_empty() {
                    Err((
                        "the label name is empty".to_owned(),
                        "name the label".to_owned(),
                    ))
                } else {
                    check::no_nul(k)
                }
            });
        }
        if let Some(p) = t.take("exposed_ports") {
            c.exposed_ports = self.ports(&p);
        }
        c
    }

    fn account(&mut self, f: &Field<'_>) -> Option<AccountSection> {
        let mut t = self.table(f, "a table like [account]", ACCOUNT_KEYS)?;
        let mut a = AccountSection {
            name: None,
            uid: None,
            gid: None,
            home: None,
            shell: None,
            sudo: None,
            groups: Vec::new(),
            gecos: None,
            location: f.loc.clone(),
            key: f.path.clone(),
        };
        if let Some(n) = t.take("name") {
            a.name = self.string_with(&n, "a string like \"coder\"", check::account_name);
        }
        if let Some(u) = t.take("uid") {
            a.uid = self.integer_with(&u, "an integer user id like 1000", check::account_id);
        }
        if let Some(g) = t.take("gid") {
            a.gid = self.integer_with(&g, "an integer group id like 1000", check::id);
        }
        if let Some(h) = t.take("home") {
            a.home = self.string_with(&h, "a string like \"/home/coder\"", |s| {
                check::image_path(s, "/home/coder").map(|p| p.absolute())
            });
        }
        if let Some(s) = t.take("shell") {
            a.shell = self.string_with(&s, "a string like \"/bin/bash\"", |s| {
                check::image_path(s, "/bin/bash").map(|p| p.absolute())
            });
        }
        if let Some(s) = t.take("sudo") {
            a.sudo = self.boolean(&s);
        }
        if let Some(g) = t.take("groups") {
            a.groups = self
                .strings_with(&g, "[\"docker\", \"users\"]", check::account_name)
                .unwrap_or_default();
        }
        if let Some(g) = t.take("gecos") {
            a.gecos = self.string_with(&g, "a string like \"Coder user\"", check::gecos);
        }
        Some(a)
    }

    fn services(&mut self, f: &Field<'_>) -> Option<ServicesSection> {
        let mut t = self.table(f, "a table like [services]", SERVICES_KEYS)?;
        let mut sv = ServicesSection {
            enable: Vec::new(),
            disable: Vec::new(),
            location: f.loc.clone(),
            key: f.path.clone(),
        };
        for (key, list) in [("enable", &mut sv.enable), ("disable", &mut sv.disable)] {
            if let Some(v) = t.take(key) {
                *list = self
                    .strings_with(&v, "[\"docker\", \"ssh.socket\"]", check::unit_name)
                    .unwrap_or_default();
            }
        }
        Some(sv)
    }

    fn size(&mut self, f: &Field<'_>) -> Option<u64> {
        match f.node.value() {
            Some(Value::Integer(n)) => self.checked(f, check::size(&n.value().to_string())),
            Some(Value::String(s)) => self.checked(f, check::size(s.value())),
            _ => {
                self.wrong_type(f, "a size like \"4G\", \"512M\" or a number of bytes");
                None
            }
        }
    }

    fn boot(&mut self, f: &Field<'_>, image: &ImageSection, base: &Half) -> Option<BootSection> {
        let mut t = self.table(f, "a table like [boot]", BOOT_KEYS)?;
        let mut b = BootSection {
            kernel: crate::default_kernel(&image.architecture),
            init: "systemd".to_owned(),
            cmdline: Vec::new(),
            root_size: None,
            free_space: 256 << 20,
            hostname: None,
            cloud_init: false,
            volume_id: None,
            label: None,
            installer: false,
            location: f.loc.clone(),
            key: f.path.clone(),
        };
        if let Some(k) = t.take("kernel")
            && let Some(k) =
                self.string_with(&k, "a package name like \"linux-image-amd64\"", |s| {
                    check::debian_package(s)
                })
        {
            b.kernel = k;
        }
        if let Some(i) = t.take("init")
            && let Some(i) = self.string_with(&i, "\"systemd\"", |s| {
                if s == "systemd" {
                    Ok(s.to_owned())
                } else {
                    Err((
                        format!("init `{s}` is not supported"),
                        "write \"systemd\" (systemd-sysv is installed as /sbin/init)".to_owned(),
                    ))
                }
            })
        {
            b.init = i;
        }
        if let Some(c) = t.take("cmdline") {
            b.cmdline = self
                .strings_with(&c, "[\"quiet\", \"net.ifnames=0\"]", check::kernel_arg)
                .unwrap_or_default();
        }
        if let Some(s) = t.take("root_size") {
            b.root_size = self.size(&s);
        }
        if let Some(s) = t.take("free_space") {
            b.free_space = self.size(&s).unwrap_or(b.free_space);
        }
        if let Some(h) = t.take("hostname") {
            b.hostname = self.string_with(&h, "a host name like \"ws-1\"", check::hostname);
        }
        if let Some(c) = t.take("cloud_init") {
            b.cloud_init = self.boolean(&c).unwrap_or(false);
        }
        if let Some(i) = t.take("installer") {
            b.installer = self.boolean(&i).unwrap_or(false);
        }
        if let Some(v) = t.take("volume_id") {
            b.volume_id = self.string_with(&v, "a volume ID like \"CODER_BOX\"", check::volume_id);
        }
        if let Some(l) = t.take("label") {
            b.label = self.string_with(&l, "a boot menu label like \"Workspace 1.2\"", |s| {
                check::no_nul(s).and_then(|s| {
                    if s.contains('\n') || s.len() > 100 {
                        Err((
                            "a boot menu label is one line of at most 100 bytes".to_owned(),
                            "shorten it".to_owned(),
                        ))
                    } else {
                        Ok(s)
                    }
                })
            });
        }
        if base.debian.is_none() {
            self.report(
                &f.loc,
                &f.path,
                Problem::Invalid {
                    reason: "[boot] installs the kernel and systemd through [base].debian, which \
                             this spec does not have"
                        .to_owned(),
                    hint: "add `debian = { packages = [] }` to [base]".to_owned(),
                },
            );
        }
        Some(b)
    }

    fn coder(&mut self, f: &Field<'_>) -> Option<CoderSection> {
        let mut t = self.table(f, "a table like [coder]", CODER_KEYS)?;
        let mut c = CoderSection {
            code_server: None,
            startup_script: None,
            location: f.loc.clone(),
            key: f.path.clone(),
        };
        if let Some(b) = t.take("code_server") {
            c.code_server = self.boolean(&b);
        }
        if let Some(s) = t.take("startup_script") {
            c.startup_script = self.string_with(&s, "a string of shell commands", check::no_nul);
        }
        Some(c)
    }

    fn ports(&mut self, f: &Field<'_>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let Some(elements) = self.array(f, "an array like [\"8080\", \"53/udp\"]") else {
            return out;
        };
        for e in &elements {
            let port = match e.node.value() {
                Some(Value::String(s)) => self.checked(e, check::port(s.value())),
                Some(Value::Integer(n)) => self.checked(e, check::port(&n.value().to_string())),
                _ => {
                    self.wrong_type(e, "a string like \"8080/tcp\" or an integer like 8080");
                    None
                }
            };
            out.extend(port);
        }
        out
    }
}

/// Parses and validates a spec; see [`Spec::parse`].
/// A repository name from its URI or PPA: lowercase, every run of other characters one `-`
/// (`https://download.docker.com/linux/debian` → `download-docker-com-linux-debian`).
fn derived_name(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let mut out = String::new();
    for c in rest.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_owned();
    if out.is_empty() || out == "main" {
        format!("repo-{out}")
    } else {
        out
    }
}

pub(crate) fn parse(text: &str, path: &Path) -> Result<Spec, SpecError> {
    let lines = Lines::new(text);
    let mut p = Parser {
        file: path.to_owned(),
        lines,
        errors: Vec::new(),
    };
    let start = Location {
        file: path.to_owned(),
        line: 1,
        column: 1,
    };
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            return Err(SpecError::Syntax {
                location: p.locate(e.span(), &start),
                message: e.message().trim().replace('\n', "; "),
            });
        }
    };
    let root = Field {
        path: String::new(),
        node: Node::Table(doc.as_table()),
        key_loc: start.clone(),
        loc: start,
    };
    let mut top = p.table(&root, "a table", ROOT_KEYS);
    let mut take = |name: &str| top.as_mut().and_then(|t| t.take(name));
    let (image, base, user, config) = (take("image"), take("base"), take("user"), take("config"));
    let image = p.image(image);
    let base = p.half(base);
    let user = p.half(user);
    p.debian_halves(&base, &user);
    let config = p.config(config);
    let (account, coder) = (take("account"), take("coder"));
    let account = account.and_then(|f| p.account(&f));
    let coder = coder.and_then(|f| p.coder(&f));
    let services = take("services").and_then(|f| p.services(&f));
    let boot = take("boot").and_then(|f| p.boot(&f, &image, &base));

    if !p.errors.is_empty() {
        let mut errors = p.errors;
        errors.sort_by(|a, b| {
            (a.location.line, a.location.column).cmp(&(b.location.line, b.location.column))
        });
        return Err(SpecError::Invalid(errors));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok(Spec {
        path: path.to_owned(),
        dir,
        image,
        base,
        user,
        config,
        account,
        coder,
        services,
        boot,
    })
}
