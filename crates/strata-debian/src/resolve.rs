//! The package universe built from `Packages` indices, and an apt-compatible resolver.
//!
//! The resolver follows what `apt-get install --no-install-recommends` does on an empty
//! system: every package name has one candidate (its highest version over all sources), the
//! requested packages are marked first, then each one's dependencies are installed depth
//! first, dependencies without alternatives before or-groups; an or-group already satisfied by
//! a marked package needs nothing, otherwise its first alternative with an installable
//! candidate wins (for a virtual package, the providers sorted essential first, then by
//! priority, then by name).

use std::collections::{BTreeSet, HashMap};

use crate::deb822::{self, Dep, DepList, Relation};
use crate::version::Version;
use crate::{DebianError, LockedPackage};

/// `Multi-Arch` field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MultiArch {
    No,
    Same,
    Foreign,
    Allowed,
}

/// One version of one package from an index.
#[derive(Debug, Clone)]
pub(crate) struct PkgVer {
    pub name: String,
    pub version: Version,
    pub arch: String,
    pub multi_arch: MultiArch,
    pub essential: bool,
    /// 1 required, 2 important, 3 standard, 4 optional, 5 extra / unknown.
    pub priority: u8,
    pub pre_depends: String,
    pub depends: String,
    pub recommends: String,
    pub conflicts: String,
    pub breaks: String,
    pub provides: Vec<Dep>,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    /// Index of the release (source) it came from.
    pub release: usize,
}

/// All candidate package versions, with the providers of every virtual name.
#[derive(Debug, Default)]
pub(crate) struct Universe {
    pub versions: Vec<PkgVer>,
    /// Name → index of the candidate version.
    candidates: HashMap<String, usize>,
    /// Provided name → candidate indices providing it.
    providers: HashMap<String, Vec<usize>>,
    /// The index texts, in the order apt reads them (for [`Universe::mention_order`]).
    texts: Vec<String>,
    /// Name → position of its first mention in the indices, computed on first need.
    mentions: std::sync::OnceLock<HashMap<String, usize>>,
    /// Per release (source) index: its repository's name and apt pin priority. A release
    /// not listed has priority 500.
    sources: Vec<(String, i32)>,
    /// Name → a version of another repository that ties with the candidate (same pin, same
    /// version, other contents).
    ties: HashMap<String, usize>,
}

/// The fields of a `Packages` stanza the resolver reads, in slot order.
const FIELDS: [&str; 15] = [
    "Package",
    "Architecture",
    "Version",
    "Provides",
    "Multi-Arch",
    "Essential",
    "Priority",
    "Pre-Depends",
    "Depends",
    "Recommends",
    "Conflicts",
    "Breaks",
    "Filename",
    "Size",
    "SHA256",
];

type Slots<'a> = [Option<&'a str>; FIELDS.len()];

/// Scans stanzas of a `Packages` file keeping only [`FIELDS`]; a fast special case of
/// [`deb822::paragraphs`] for multi-megabyte indices.
fn scan_stanzas<'a>(
    text: &'a str,
    mut each: impl FnMut(&Slots<'a>) -> Result<(), DebianError>,
    file: &str,
) -> Result<(), DebianError> {
    let mut slots: Slots<'a> = [None; FIELDS.len()];
    let mut any = false;
    let mut last: Option<usize> = None;
    let base = text.as_ptr() as usize;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            if any {
                each(&slots)?;
                slots = [None; FIELDS.len()];
                any = false;
            }
            last = None;
            continue;
        }
        let first = line.as_bytes()[0];
        if first == b' ' || first == b'\t' {
            if let Some(i) = last
                && let Some(v) = slots[i]
            {
                let start = v.as_ptr() as usize - base;
                let end = line.as_ptr() as usize - base + line.len();
                slots[i] = Some(&text[start..end]);
            }
            continue;
        }
        if first == b'#' {
            continue;
        }
        let Some(colon) = line.find(':') else {
            return Err(DebianError::Parse {
                file: file.to_owned(),
                message: format!("line without a field name: {line}"),
            });
        };
        let name = &line[..colon];
        any = true;
        last = FIELDS
            .iter()
            .position(|f| *f == name)
            .or_else(|| FIELDS.iter().position(|f| f.eq_ignore_ascii_case(name)));
        if let Some(i) = last {
            slots[i] = Some(line[colon + 1..].trim_start());
        }
    }
    if any {
        each(&slots)?;
    }
    Ok(())
}

/// Parses one `Packages` index (from release `release`), keeping only architectures `arch`
/// and `all`. Large indices are parsed on two threads.
pub(crate) fn parse_index(
    file: &str,
    text: &str,
    release: usize,
    arch: &str,
) -> Result<Vec<PkgVer>, DebianError> {
    if text.len() > 4 << 20 {
        // The middle rounded up to a character boundary: a UTF-8 Maintainer or Description
        // may straddle the byte in the middle.
        let mid = (text.len() / 2..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        if let Some(off) = text[mid..].find("\n\n") {
            let (a, b) = text.split_at(mid + off + 2);
            let (ra, rb) = std::thread::scope(|s| {
                let h = s.spawn(|| parse_chunk(file, b, release, arch));
                let ra = parse_chunk(file, a, release, arch);
                let rb = h.join().unwrap_or_else(|_| {
                    Err(DebianError::Parse {
                        file: file.to_owned(),
                        message: "parser thread panicked".into(),
                    })
                });
                (ra, rb)
            });
            let mut out = ra?;
            out.extend(rb?);
            return Ok(out);
        }
    }
    parse_chunk(file, text, release, arch)
}

fn parse_chunk(
    file: &str,
    text: &str,
    release: usize,
    arch: &str,
) -> Result<Vec<PkgVer>, DebianError> {
    let mut out = Vec::new();
    let perr = |message: String| DebianError::Parse {
        file: file.to_owned(),
        message,
    };
    scan_stanzas(
        text,
        |f| {
            let get = |i: usize| f[i].map(str::trim_end);
            let Some(name) = get(0) else {
                return Ok(());
            };
            let pa = get(1).unwrap_or("");
            if pa != arch && pa != "all" {
                return Ok(());
            }
            let version = Version::parse(get(2).unwrap_or(""))
                .map_err(|e| perr(format!("package {name}: {e}")))?;
            let provides = match get(3) {
                Some(p) => deb822::parse_deps(p)
                    .map_err(|e| perr(format!("package {name}: Provides {e}")))?
                    .into_iter()
                    .flatten()
                    .collect(),
                None => Vec::new(),
            };
            let field = |i: usize| get(i).unwrap_or("").to_owned();
            let pv = PkgVer {
                name: name.to_owned(),
                version,
                arch: pa.to_owned(),
                multi_arch: match get(4) {
                    Some("same") => MultiArch::Same,
                    Some("foreign") => MultiArch::Foreign,
                    Some("allowed") => MultiArch::Allowed,
                    _ => MultiArch::No,
                },
                essential: get(5).is_some_and(|e| e.eq_ignore_ascii_case("yes")),
                priority: match get(6) {
                    Some("required") => 1,
                    Some("important") => 2,
                    Some("standard") => 3,
                    Some("optional") => 4,
                    _ => 5,
                },
                pre_depends: field(7),
                depends: field(8),
                recommends: field(9),
                conflicts: field(10),
                breaks: field(11),
                provides,
                filename: field(12),
                size: get(13)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| perr(format!("package {name}: missing or bad Size")))?,
                sha256: get(14)
                    .ok_or_else(|| perr(format!("package {name}: missing SHA256")))?
                    .to_ascii_lowercase(),
                release,
            };
            if pv.filename.is_empty() {
                return Err(perr(format!("package {name}: missing Filename")));
            }
            out.push(pv);
            Ok(())
        },
        file,
    )?;
    Ok(out)
}

/// The fields in which apt's cache generator meets package names, in its order.
const MENTION_FIELDS: [&str; 10] = [
    "Package",
    "Pre-Depends",
    "Depends",
    "Conflicts",
    "Breaks",
    "Recommends",
    "Suggests",
    "Replaces",
    "Enhances",
    "Provides",
];

impl Universe {
    /// Keeps an index text for tie-breaking between equal providers.
    pub fn add_text(&mut self, text: String) {
        self.texts.push(text);
    }

    /// Where a name is first mentioned in the indices. apt numbers packages in the order its
    /// cache generator meets their names and, among otherwise equal providers of a virtual
    /// package, prefers the highest number; this reproduces that order.
    fn mention_order(&self, name: &str) -> usize {
        let map = self.mentions.get_or_init(|| {
            let mut map: HashMap<String, usize> = HashMap::new();
            for text in &self.texts {
                for para in deb822::paragraphs(text).flatten() {
                    for field in MENTION_FIELDS {
                        let Some(v) = para.get(field) else { continue };
                        for alt in v.split([',', '|']) {
                            let n = alt
                                .trim()
                                .split([' ', '(', ':', '\n', '\t', '['])
                                .next()
                                .unwrap_or("");
                            if !n.is_empty() && !map.contains_key(n) {
                                let next = map.len();
                                map.insert(n.to_owned(), next);
                            }
                        }
                    }
                }
            }
            map
        });
        map.get(name).copied().unwrap_or(usize::MAX)
    }

    /// Names each release (source) index's repository and pin priority; call before `add`.
    pub fn set_sources(&mut self, sources: Vec<(String, i32)>) {
        self.sources = sources;
    }

    fn pin(&self, release: usize) -> i32 {
        self.sources.get(release).map_or(500, |s| s.1)
    }

    /// The repository name of a release index.
    pub fn repo(&self, release: usize) -> &str {
        self.sources.get(release).map_or("", |s| s.0.as_str())
    }

    /// Adds parsed package versions. As apt: the candidate is the version with the highest
    /// pin priority, then the highest version; for equal ones the first added wins.
    pub fn add(&mut self, versions: Vec<PkgVer>) {
        for pv in versions {
            let idx = self.versions.len();
            let better = match self.candidates.get(&pv.name) {
                None => true,
                Some(&cur) => {
                    let c = &self.versions[cur];
                    let order =
                        (self.pin(pv.release), &pv.version).cmp(&(self.pin(c.release), &c.version));
                    if order == std::cmp::Ordering::Equal
                        && self.repo(pv.release) != self.repo(c.release)
                        && !pv.sha256.eq_ignore_ascii_case(&c.sha256)
                    {
                        self.ties.insert(pv.name.clone(), idx);
                    }
                    order == std::cmp::Ordering::Greater
                }
            };
            if better {
                self.ties.remove(&pv.name);
                self.candidates.insert(pv.name.clone(), idx);
            }
            self.versions.push(pv);
        }
    }

    /// Builds the provider map from the candidates; call after the last `add_index`.
    pub fn finish(&mut self) {
        self.providers.clear();
        let mut cands: Vec<usize> = self.candidates.values().copied().collect();
        cands.sort_unstable();
        for idx in cands {
            for p in &self.versions[idx].provides {
                self.providers.entry(p.name.clone()).or_default().push(idx);
            }
        }
    }

    /// The candidate of a name.
    pub fn candidate(&self, name: &str) -> Option<&PkgVer> {
        self.candidates.get(name).map(|&i| &self.versions[i])
    }

    /// Number of candidate packages.
    pub fn candidate_count(&self) -> usize {
        self.candidates.len()
    }

    /// Names of all candidates with `Essential: yes`, sorted.
    pub fn essential_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .candidates
            .iter()
            .filter(|(_, i)| self.versions[**i].essential)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// Whether candidate `idx` satisfies the single dependency `dep` (directly or through a
    /// `Provides`).
    fn satisfies(&self, idx: usize, dep: &Dep, native: &str) -> bool {
        let p = &self.versions[idx];
        if p.name == dep.name && arch_ok(p, dep, native) {
            return match &dep.constraint {
                None => true,
                Some((op, v)) => op.holds(&p.version, v),
            };
        }
        p.provides.iter().any(|pr| {
            pr.name == dep.name
                && match (&dep.constraint, &pr.constraint) {
                    (None, _) => true,
                    (Some((op, want)), Some((Relation::Eq, have))) => op.holds(have, want),
                    (Some(_), _) => false,
                }
                && match dep.arch.as_deref() {
                    None | Some("any") => true,
                    Some("native") => true,
                    Some(a) => a == native || (a == p.arch),
                }
        })
    }

    /// Candidates that could satisfy `dep`, in apt's order of preference.
    fn targets(&self, dep: &Dep, native: &str) -> Vec<usize> {
        let mut out = Vec::new();
        if let Some(&i) = self.candidates.get(&dep.name)
            && self.satisfies(i, dep, native)
        {
            out.push(i);
        }
        let mut provs: Vec<usize> = self
            .providers
            .get(&dep.name)
            .map(|v| {
                v.iter()
                    .copied()
                    .filter(|&i| !out.contains(&i) && self.satisfies(i, dep, native))
                    .collect()
            })
            .unwrap_or_default();
        provs.sort_by(|&a, &b| {
            let (a, b) = (&self.versions[a], &self.versions[b]);
            b.essential
                .cmp(&a.essential)
                .then(a.priority.cmp(&b.priority))
        });
        // Ties (same essential flag and priority) go to the name apt met last.
        if provs.windows(2).any(|w| {
            let (a, b) = (&self.versions[w[0]], &self.versions[w[1]]);
            a.essential == b.essential && a.priority == b.priority
        }) {
            provs.sort_by(|&a, &b| {
                let (a, b) = (&self.versions[a], &self.versions[b]);
                b.essential
                    .cmp(&a.essential)
                    .then(a.priority.cmp(&b.priority))
                    .then_with(|| {
                        self.mention_order(&b.name)
                            .cmp(&self.mention_order(&a.name))
                    })
                    .then(a.name.cmp(&b.name))
            });
        }
        out.extend(provs);
        out
    }
}

fn arch_ok(p: &PkgVer, dep: &Dep, native: &str) -> bool {
    match dep.arch.as_deref() {
        None => true,
        Some("any") => p.multi_arch == MultiArch::Allowed,
        Some("native") => true,
        Some(a) => a == native || a == p.arch,
    }
}

/// What the resolver is asked for.
pub(crate) struct Goal<'a> {
    pub packages: &'a [String],
    pub recommends: bool,
    pub essential: bool,
    pub native: &'a str,
}

/// The result: selected candidate indices in the order they were marked, and for each its
/// resolved dependencies (names).
pub(crate) struct Resolution {
    pub selected: Vec<usize>,
    pub depends: HashMap<usize, BTreeSet<String>>,
}

struct Solver<'u> {
    u: &'u Universe,
    native: String,
    recommends: bool,
    /// Selected package name → candidate index.
    selected: HashMap<String, usize>,
    order: Vec<usize>,
    /// Why a package was selected: the package that pulled it in (None: requested).
    parent: HashMap<usize, Option<usize>>,
    expanded: BTreeSet<usize>,
    depends: HashMap<usize, BTreeSet<String>>,
    /// Parsed dependency fields, by candidate index.
    parsed: HashMap<usize, Parsed>,
}

#[derive(Clone)]
struct Parsed {
    /// Dependency groups; those from index `soft` on are `Recommends`.
    groups: DepList,
    soft: usize,
    negative: Vec<Dep>,
}

pub(crate) fn resolve(u: &Universe, goal: &Goal<'_>) -> Result<Resolution, DebianError> {
    let mut s = Solver {
        u,
        native: goal.native.to_owned(),
        recommends: goal.recommends,
        selected: HashMap::new(),
        order: Vec::new(),
        parent: HashMap::new(),
        expanded: BTreeSet::new(),
        depends: HashMap::new(),
        parsed: HashMap::new(),
    };
    let mut names: Vec<String> = goal.packages.to_vec();
    if goal.essential {
        for e in u.essential_names() {
            if !names.contains(&e) {
                names.push(e);
            }
        }
    }
    // Mark every requested package first, as apt-get does, then install dependencies.
    let mut roots = Vec::new();
    for raw in &names {
        // apt's `name=version` form is accepted as `name (= version)`.
        let text = match raw.split_once('=') {
            Some((n, v)) if !raw.contains('(') => format!("{} (= {})", n.trim(), v.trim()),
            _ => raw.clone(),
        };
        let dep = deb822::parse_deps(&text)
            .ok()
            .and_then(|g| g.into_iter().next())
            .and_then(|g| g.into_iter().next())
            .ok_or_else(|| DebianError::UnknownPackage { name: raw.clone() })?;
        let targets = u.targets(&dep, goal.native);
        let idx = match targets.as_slice() {
            [] => {
                return Err(DebianError::UnknownPackage { name: raw.clone() });
            }
            [one] => *one,
            many => {
                if let Some(&real) = many.iter().find(|&&i| u.versions[i].name == dep.name) {
                    real
                } else {
                    return Err(DebianError::Unsatisfiable {
                        chain: vec![raw.clone()],
                        message: format!(
                            "`{raw}` is a virtual package provided by {}; request one of them",
                            many.iter()
                                .map(|&i| u.versions[i].name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        };
        if let Some(conflict) = s.conflict_with_selected(idx)? {
            return Err(DebianError::Unsatisfiable {
                chain: vec![u.versions[idx].name.clone()],
                message: format!(
                    "requested {} conflicts with requested {}",
                    u.versions[idx].name, u.versions[conflict].name
                ),
            });
        }
        s.mark(idx, None);
        roots.push(idx);
    }
    for idx in roots {
        s.expand(idx)?;
    }
    Ok(Resolution {
        selected: s.order,
        depends: s.depends,
    })
}

impl Solver<'_> {
    fn mark(&mut self, idx: usize, parent: Option<usize>) {
        let name = self.u.versions[idx].name.clone();
        if self.selected.insert(name, idx).is_none() {
            self.order.push(idx);
            self.parent.insert(idx, parent);
        }
    }

    fn parsed(&mut self, idx: usize) -> Result<Parsed, DebianError> {
        if let Some(p) = self.parsed.get(&idx) {
            return Ok(p.clone());
        }
        let v = &self.u.versions[idx];
        let perr = |field: &str, e: String| DebianError::Parse {
            file: v.filename.clone(),
            message: format!("{} {field}: {e}", v.name),
        };
        let mut groups = deb822::parse_deps(&v.pre_depends).map_err(|e| perr("Pre-Depends", e))?;
        groups.extend(deb822::parse_deps(&v.depends).map_err(|e| perr("Depends", e))?);
        let soft = groups.len();
        if self.recommends {
            groups.extend(deb822::parse_deps(&v.recommends).map_err(|e| perr("Recommends", e))?);
        }
        let mut negative: Vec<Dep> = deb822::parse_deps(&v.conflicts)
            .map_err(|e| perr("Conflicts", e))?
            .into_iter()
            .flatten()
            .collect();
        negative.extend(
            deb822::parse_deps(&v.breaks)
                .map_err(|e| perr("Breaks", e))?
                .into_iter()
                .flatten(),
        );
        let p = Parsed {
            groups,
            soft,
            negative,
        };
        self.parsed.insert(idx, p.clone());
        Ok(p)
    }

    /// A selected package that `idx` conflicts with (either direction), if any.
    fn conflict_with_selected(&mut self, idx: usize) -> Result<Option<usize>, DebianError> {
        let neg = self.parsed(idx)?.negative;
        let sel: Vec<usize> = self.order.clone();
        for &other in &sel {
            if other == idx || self.u.versions[other].name == self.u.versions[idx].name {
                continue;
            }
            if neg.iter().any(|d| self.u.satisfies(other, d, &self.native)) {
                return Ok(Some(other));
            }
            let oneg = self.parsed(other)?.negative;
            if oneg.iter().any(|d| self.u.satisfies(idx, d, &self.native)) {
                return Ok(Some(other));
            }
        }
        Ok(None)
    }

    fn satisfied_by_selected(&self, group: &[Dep]) -> Option<usize> {
        for dep in group {
            if let Some(&i) = self.selected.get(&dep.name)
                && self.u.satisfies(i, dep, &self.native)
            {
                return Some(i);
            }
            if let Some(provs) = self.u.providers.get(&dep.name) {
                for &p in provs {
                    if self.selected.get(&self.u.versions[p].name) == Some(&p)
                        && self.u.satisfies(p, dep, &self.native)
                    {
                        return Some(p);
                    }
                }
            }
        }
        None
    }

    fn chain(&self, idx: usize) -> Vec<String> {
        let mut chain = vec![self.u.versions[idx].name.clone()];
        let mut cur = idx;
        while let Some(Some(p)) = self.parent.get(&cur) {
            chain.push(self.u.versions[*p].name.clone());
            cur = *p;
            if chain.len() > 1000 {
                break;
            }
        }
        chain.reverse();
        chain
    }

    fn expand(&mut self, idx: usize) -> Result<(), DebianError> {
        if !self.expanded.insert(idx) {
            return Ok(());
        }
        let parsed = self.parsed(idx)?;
        // Dependencies without alternatives first, then or-groups, each in field order.
        let tagged = parsed
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g, i >= parsed.soft));
        let (single, multi): (Vec<_>, Vec<_>) = tagged.partition(|(g, _)| g.len() == 1);
        for (group, soft) in single.into_iter().chain(multi) {
            if soft {
                // A recommendation that cannot be installed is left out, with everything
                // it would have pulled in.
                let saved = (
                    self.selected.clone(),
                    self.order.clone(),
                    self.parent.clone(),
                    self.expanded.clone(),
                    self.depends.clone(),
                );
                if self.install_group(idx, group).is_err() {
                    (
                        self.selected,
                        self.order,
                        self.parent,
                        self.expanded,
                        self.depends,
                    ) = saved;
                }
            } else {
                self.install_group(idx, group)?;
            }
        }
        Ok(())
    }

    /// Satisfies one dependency group of `idx`, installing its first installable alternative.
    fn install_group(&mut self, idx: usize, group: &[Dep]) -> Result<(), DebianError> {
        {
            let mut group: Vec<Dep> = group.to_vec();
            // strata lays out merged /usr itself: prefer `usr-is-merged` to `usrmerge`.
            if let Some(pos) = group.iter().position(|d| d.name == "usr-is-merged")
                && group.iter().any(|d| d.name == "usrmerge")
            {
                let d = group.remove(pos);
                group.insert(0, d);
            }
            if let Some(sat) = self.satisfied_by_selected(&group) {
                let name = self.u.versions[sat].name.clone();
                self.depends.entry(idx).or_default().insert(name);
                return Ok(());
            }
            let mut chosen = None;
            let mut why = Vec::new();
            for dep in &group {
                let targets = self.u.targets(dep, &self.native);
                if targets.is_empty() {
                    why.push(self.explain_missing(dep));
                }
                for t in targets {
                    if let Some(c) = self.conflict_with_selected(t)? {
                        why.push(format!(
                            "{} conflicts with {} (pulled in by {})",
                            self.u.versions[t].name,
                            self.u.versions[c].name,
                            self.chain(c).join(" → ")
                        ));
                        continue;
                    }
                    chosen = Some(t);
                    break;
                }
                if chosen.is_some() {
                    break;
                }
            }
            let Some(t) = chosen else {
                let chain = self.chain(idx);
                return Err(DebianError::Unsatisfiable {
                    message: format!(
                        "{} depends on `{}`, which cannot be satisfied: {}",
                        self.u.versions[idx].name,
                        deb822::format_group(&group),
                        why.join("; ")
                    ),
                    chain,
                });
            };
            let name = self.u.versions[t].name.clone();
            self.depends.entry(idx).or_default().insert(name);
            self.mark(t, Some(idx));
            self.expand(t)?;
        }
        Ok(())
    }

    fn explain_missing(&self, dep: &Dep) -> String {
        match self.u.candidate(&dep.name) {
            Some(c) if !arch_ok(c, dep, &self.native) => format!(
                "{} {} ({}, Multi-Arch {:?}) does not satisfy the qualifier of `{dep}`",
                c.name, c.version, c.arch, c.multi_arch
            ),
            Some(c) => format!("the candidate of {} is {}, not `{dep}`", c.name, c.version),
            None => format!("no package provides `{dep}`"),
        }
    }
}

/// Turns a resolution into locked packages, sorted by name.
/// `mirrors` gives each release index's URI, suite and repository name. A selected package
/// whose candidate ties with another repository's is an error naming both.
pub(crate) fn locked_packages(
    u: &Universe,
    res: &Resolution,
    mirrors: &[(String, String, String)],
) -> Result<Vec<LockedPackage>, DebianError> {
    for &i in &res.selected {
        let v = &u.versions[i];
        if let Some(&other) = u.ties.get(&v.name) {
            return Err(DebianError::Ambiguous {
                name: v.name.clone(),
                version: v.version.to_string(),
                first: u.repo(v.release).to_owned(),
                second: u.repo(u.versions[other].release).to_owned(),
            });
        }
    }
    let mut out: Vec<LockedPackage> = res
        .selected
        .iter()
        .map(|&i| {
            let v = &u.versions[i];
            LockedPackage {
                name: v.name.clone(),
                version: v.version.to_string(),
                architecture: v.arch.clone(),
                filename: v.filename.clone(),
                mirror: mirrors
                    .get(v.release)
                    .map(|m| m.0.clone())
                    .unwrap_or_default(),
                suite: mirrors
                    .get(v.release)
                    .map(|m| m.1.clone())
                    .unwrap_or_default(),
                repo: mirrors
                    .get(v.release)
                    .map(|m| m.2.clone())
                    .unwrap_or_default(),
                size: v.size,
                sha256: v.sha256.clone(),
                depends: res
                    .depends
                    .get(&i)
                    .map(|s| s.iter().filter(|n| **n != v.name).cloned().collect())
                    .unwrap_or_default(),
                essential: v.essential,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index over the two-thread threshold whose middle byte falls inside a UTF-8
    /// character (found reading the split for the fuzz targets): splitting it there panicked.
    #[test]
    fn large_index_split_inside_a_utf8_character() {
        let one = stanza("p", "1", "Maintainer: Jöns Ü <j@example>\n");
        let mut text = String::new();
        while text.len() <= 4 << 20 {
            text.push_str(&one);
        }
        // A comment line in front, as long as it takes to move the middle into a character.
        let text = (0..2 * one.len())
            .map(|k| format!("#{}\n{text}", "x".repeat(k)))
            .find(|t| !t.is_char_boundary(t.len() / 2))
            .expect("some comment length puts the middle inside a character");
        let parsed = parse_index("Packages", &text, 0, "amd64").expect("parses");
        assert_eq!(parsed.len(), text.matches("Package: p\n").count());
    }

    fn universe(text: &str) -> Universe {
        let mut u = Universe::default();
        u.add(parse_index("test", text, 0, "amd64").expect("index"));
        u.add_text(text.to_owned());
        u.finish();
        u
    }

    fn stanza(name: &str, version: &str, extra: &str) -> String {
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\n{extra}Filename: pool/{name}.deb\nSize: 1\nSHA256: {}\n\n",
            "0".repeat(64)
        )
    }

    fn names(u: &Universe, r: &Resolution) -> Vec<String> {
        let mut v: Vec<String> = r
            .selected
            .iter()
            .map(|&i| u.versions[i].name.clone())
            .collect();
        v.sort();
        v
    }

    fn run(u: &Universe, pkgs: &[&str]) -> Result<Resolution, DebianError> {
        let p: Vec<String> = pkgs.iter().map(|s| s.to_string()).collect();
        resolve(
            u,
            &Goal {
                packages: &p,
                recommends: false,
                essential: true,
                native: "amd64",
            },
        )
    }

    #[test]
    fn closure_alternatives_provides_and_versions() {
        let idx = [
            stanza(
                "app",
                "1.0",
                "Depends: libfoo (>= 2), awk, mta | exim\nRecommends: rec\n",
            ),
            stanza("libfoo", "1.0", ""),
            stanza("libfoo", "2.1", "Pre-Depends: base\n"),
            stanza("base", "1", "Essential: yes\n"),
            stanza("mawk", "1", "Priority: required\nProvides: awk\n"),
            stanza("gawk", "1", "Priority: optional\nProvides: awk\n"),
            stanza("exim", "1", "Provides: mta (= 1)\n"),
            stanza("rec", "1", ""),
        ]
        .concat();
        let u = universe(&idx);
        let r = run(&u, &["app"]).expect("resolve");
        assert_eq!(names(&u, &r), ["app", "base", "exim", "libfoo", "mawk"]);
        let libfoo = r
            .selected
            .iter()
            .find(|&&i| u.versions[i].name == "libfoo")
            .expect("libfoo");
        assert_eq!(u.versions[*libfoo].version.as_str(), "2.1");
    }

    #[test]
    fn equal_providers_go_to_the_name_apt_met_last() {
        let idx = [
            stanza("meta", "1", "Suggests: term-b\nRecommends: term-c\n"),
            stanza("app", "1", "Depends: x-terminal\n"),
            stanza("term-a", "1", "Provides: x-terminal\n"),
            stanza("term-b", "1", "Provides: x-terminal\n"),
            stanza("term-c", "1", "Provides: x-terminal\n"),
        ]
        .concat();
        let u = universe(&idx);
        // Met in order: term-c (Recommends is read before Suggests), term-b, term-a.
        assert_eq!(
            names(&u, &run(&u, &["app"]).expect("ok")),
            ["app", "term-a"]
        );
    }

    #[test]
    fn unsatisfiable_reports_chain() {
        let idx = [
            stanza("top", "1", "Depends: mid\n"),
            stanza("mid", "1", "Depends: leaf (>= 3)\n"),
            stanza("leaf", "2", ""),
        ]
        .concat();
        let u = universe(&idx);
        let err = run(&u, &["top"]).err().expect("must fail").to_string();
        assert!(err.contains("top → mid"), "{err}");
        assert!(err.contains("leaf (>= 3)"), "{err}");
        assert!(err.contains("candidate of leaf is 2"), "{err}");
    }

    #[test]
    fn cycles_and_conflicts() {
        let idx = [
            stanza("a", "1", "Depends: b\n"),
            stanza("b", "1", "Depends: a, x | y\n"),
            stanza("x", "1", "Conflicts: a\n"),
            stanza("y", "1", ""),
        ]
        .concat();
        let u = universe(&idx);
        let r = run(&u, &["a"]).expect("resolve");
        assert_eq!(names(&u, &r), ["a", "b", "y"]);
    }

    #[test]
    fn usr_is_merged_preferred() {
        let idx = [
            stanza("ish", "1", "Depends: usrmerge | usr-is-merged\n"),
            stanza("usrmerge", "1", "Depends: perl\n"),
            stanza("usr-is-merged", "1", ""),
            stanza("perl", "1", ""),
        ]
        .concat();
        let u = universe(&idx);
        let r = run(&u, &["ish"]).expect("resolve");
        assert_eq!(names(&u, &r), ["ish", "usr-is-merged"]);
    }

    #[test]
    fn multiarch_qualifiers() {
        let idx = [
            stanza("tool", "1", "Depends: py:any, lib:native\n"),
            stanza("py", "3", "Multi-Arch: allowed\n"),
            stanza("lib", "1", ""),
            stanza("bad", "1", "Depends: lib:any\n"),
        ]
        .concat();
        let u = universe(&idx);
        assert_eq!(
            names(&u, &run(&u, &["tool"]).expect("ok")),
            ["lib", "py", "tool"]
        );
        assert!(run(&u, &["bad"]).is_err());
    }
}
