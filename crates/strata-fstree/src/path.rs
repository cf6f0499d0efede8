use std::cmp::Ordering;
use std::fmt;

/// Where a host file or directory lands in the image: a path in it, or the image root itself
/// (a directory whose contents become the image's top level, as a whole root file system does).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dest {
    /// `/`: the contents of a host directory go to the top of the image.
    Root,
    /// A path in the image.
    Path(ImagePath),
}

impl Dest {
    /// Parses an image path like [`ImagePath::new`], but takes `/` (or `/.`, `//`) as the root.
    pub fn new(raw: &str) -> Result<Self, PathError> {
        match ImagePath::new(raw) {
            Ok(p) => Ok(Self::Path(p)),
            Err(PathError::Root(_)) if !raw.is_empty() => Ok(Self::Root),
            Err(e) => Err(e),
        }
    }

    /// The absolute form: `/` for the root.
    pub fn absolute(&self) -> String {
        match self {
            Self::Root => "/".to_owned(),
            Self::Path(p) => p.absolute(),
        }
    }

    /// The relative form: empty for the root.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Root => "",
            Self::Path(p) => p.as_str(),
        }
    }

    /// The path, unless this is the root.
    pub fn path(&self) -> Option<&ImagePath> {
        match self {
            Self::Root => None,
            Self::Path(p) => Some(p),
        }
    }
}

impl From<ImagePath> for Dest {
    fn from(p: ImagePath) -> Self {
        Self::Path(p)
    }
}

/// A path inside an image: relative to the image root, `/`-separated, without `.` or `..`
/// components, never empty.
///
/// Ordering compares component by component, so `a` < `a/b` < `a-b`: a directory sorts right
/// before its own contents, which is the order a layer tar needs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImagePath(String);

/// An image path that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// The path names the image root itself, or nothing.
    #[error("path `{0}` names the image root, not an entry in it")]
    Root(String),
    /// The path climbs out of the image with `..`.
    #[error("path `{0}` leaves the image root through `..`")]
    Escapes(String),
    /// The path contains a NUL byte.
    #[error("path `{0}` contains a NUL byte")]
    Nul(String),
}

impl ImagePath {
    /// Parses and normalises a path; a leading `/` is allowed and ignored.
    pub fn new(raw: &str) -> Result<Self, PathError> {
        if raw.contains('\0') {
            return Err(PathError::Nul(raw.to_owned()));
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(PathError::Escapes(raw.to_owned()));
                    }
                }
                p => parts.push(p),
            }
        }
        if parts.is_empty() {
            return Err(PathError::Root(raw.to_owned()));
        }
        Ok(Self(parts.join("/")))
    }

    /// The path as stored, e.g. `usr/bin/env`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The absolute form, e.g. `/usr/bin/env`.
    pub fn absolute(&self) -> String {
        format!("/{}", self.0)
    }

    /// The parent directory, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<ImagePath> {
        self.0.rfind('/').map(|i| ImagePath(self.0[..i].to_owned()))
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// This path with `name` appended (`name` may itself hold several components).
    pub fn join(&self, name: &str) -> Result<ImagePath, PathError> {
        ImagePath::new(&format!("{}/{}", self.0, name))
    }

    /// Whether `self` is `other` or lies beneath it.
    pub fn starts_with(&self, other: &ImagePath) -> bool {
        self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

impl Ord for ImagePath {
    fn cmp(&self, other: &Self) -> Ordering {
        // Bytes, with `/` ranked below every other byte: the same order as comparing component
        // by component, without splitting (this comparison is the hot spot of sorting a tree).
        let rank = |b: &u8| if *b == b'/' { 0u16 } else { u16::from(*b) + 1 };
        self.0
            .as_bytes()
            .iter()
            .map(rank)
            .cmp(other.0.as_bytes().iter().map(rank))
    }
}

impl PartialOrd for ImagePath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImagePath {
        ImagePath::new(s).expect("valid path")
    }

    #[test]
    fn normalises() {
        assert_eq!(p("/usr//bin/./env").as_str(), "usr/bin/env");
        assert_eq!(p("a/b/../c").as_str(), "a/c");
        assert_eq!(ImagePath::new("/"), Err(PathError::Root("/".into())));
        assert_eq!(
            ImagePath::new("a/../.."),
            Err(PathError::Escapes("a/../..".into()))
        );
    }

    #[test]
    fn directory_sorts_before_its_contents() {
        let mut v = [p("a-b"), p("a/b"), p("a"), p("a/b/c"), p("a.x")];
        v.sort();
        let got: Vec<&str> = v.iter().map(ImagePath::as_str).collect();
        assert_eq!(got, ["a", "a/b", "a/b/c", "a-b", "a.x"]);
    }

    #[test]
    fn byte_order_equals_component_order() {
        let names = [
            "a", "a/b", "a-b", "a.b", "a/b-c", "a/b/c", "ab", "a0", "b", "a/a", "a!/b",
        ];
        for x in names {
            for y in names {
                let want = x.split('/').cmp(y.split('/'));
                assert_eq!(p(x).cmp(&p(y)), want, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn parents_and_prefixes() {
        assert_eq!(p("a/b/c").parent(), Some(p("a/b")));
        assert_eq!(p("a").parent(), None);
        assert!(p("a/b").starts_with(&p("a")));
        assert!(!p("ab").starts_with(&p("a")));
    }
}
