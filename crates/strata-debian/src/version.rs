//! Debian package versions and dpkg's ordering of them.

use std::cmp::Ordering;
use std::fmt;

/// A Debian version `[epoch:]upstream[-revision]`, ordered the way dpkg orders versions.
///
/// Two versions that dpkg considers equal (`1.0` and `0:1.0`) compare equal here too.
#[derive(Clone)]
pub struct Version {
    raw: String,
    epoch: u64,
    upstream: (usize, usize),
    revision: (usize, usize),
}

/// A version string dpkg would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Debian version `{version}`: {reason}")]
pub struct VersionError {
    /// The offending text.
    pub version: String,
    /// Why it is refused.
    pub reason: &'static str,
}

impl Version {
    /// Parses a version; surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        let raw = text.trim().to_owned();
        let err = |reason| VersionError {
            version: raw.clone(),
            reason,
        };
        if raw.is_empty() {
            return Err(err("empty version"));
        }
        if raw.chars().any(char::is_whitespace) {
            return Err(err("contains whitespace"));
        }
        let (epoch, rest_start) = match raw.find(':') {
            Some(i) => {
                let e = &raw[..i];
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("epoch is not a number"));
                }
                let epoch = e.parse::<u64>().map_err(|_| err("epoch is too large"))?;
                (epoch, i + 1)
            }
            None => (0, 0),
        };
        let rest = &raw[rest_start..];
        let (upstream, revision) = match rest.rfind('-') {
            Some(i) => (
                (rest_start, rest_start + i),
                (rest_start + i + 1, raw.len()),
            ),
            None => ((rest_start, raw.len()), (raw.len(), raw.len())),
        };
        let up = &raw[upstream.0..upstream.1];
        if up.is_empty() {
            return Err(err("empty upstream version"));
        }
        if !up.as_bytes()[0].is_ascii_digit() {
            return Err(err("upstream version does not start with a digit"));
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b".+~-:".contains(&b);
        if !up.bytes().all(allowed) {
            return Err(err("invalid character in upstream version"));
        }
        let rev = &raw[revision.0..revision.1];
        if rest.ends_with('-') {
            return Err(err("empty revision"));
        }
        if !rev
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~".contains(&b))
        {
            return Err(err("invalid character in revision"));
        }
        Ok(Self {
            raw,
            epoch,
            upstream,
            revision,
        })
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The epoch (0 when absent).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The upstream part.
    pub fn upstream(&self) -> &str {
        &self.raw[self.upstream.0..self.upstream.1]
    }

    /// The Debian revision (empty when absent).
    pub fn revision(&self) -> &str {
        &self.raw[self.revision.0..self.revision.1]
    }
}

/// Compares two version strings the way `dpkg --compare-versions` does; unparsable strings
/// compare as their raw text after every valid version.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (Version::parse(a), Version::parse(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// The weight of a non-digit character: `~` sorts before everything, even the end of the
/// string; letters sort before other characters.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's comparison of one version part: alternating runs of non-digits (compared by
/// [`weight`]) and digits (compared numerically, of any length).
fn compare_part(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let wa = weight(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let wb = weight(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            if i < a.len() && !a[i].is_ascii_digit() {
                i += 1;
            }
            if j < b.len() && !b[j].is_ascii_digit() {
                j += 1;
            }
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let si = i;
        let sj = j;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(self.upstream().as_bytes(), other.upstream().as_bytes()))
            .then_with(|| compare_part(self.revision().as_bytes(), other.revision().as_bytes()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs and the ordering `dpkg --compare-versions` gives them (checked on this machine by
    /// `dpkg_agrees` below when dpkg is installed).
    pub(crate) const TABLE: &[(&str, &str, Ordering)] = &[
        ("1.0", "1.0", Ordering::Equal),
        ("1.0", "0:1.0", Ordering::Equal),
        ("1.0-0", "1.0", Ordering::Equal),
        ("1.0", "1.1", Ordering::Less),
        ("1.10", "1.9", Ordering::Greater),
        ("1:0.1", "2.0", Ordering::Greater),
        ("1.0~rc1", "1.0", Ordering::Less),
        ("1.0~~", "1.0~", Ordering::Less),
        ("1.0~", "1.0", Ordering::Less),
        ("1.0", "1.0a", Ordering::Less),
        ("1.0a", "1.0+", Ordering::Less),
        ("1.0+", "1.0.", Ordering::Less),
        ("1.0-1", "1.0-1ubuntu1", Ordering::Less),
        ("1.0-1", "1.0-1.1", Ordering::Less),
        ("1.0-1+deb12u1", "1.0-1", Ordering::Greater),
        ("2.36-9+deb12u9", "2.36-9+deb12u10", Ordering::Less),
        ("1.2.3-4", "1.2.3-10", Ordering::Less),
        ("0001", "1", Ordering::Equal),
        ("1.001", "1.1", Ordering::Equal),
        ("1.0-a", "1.0-1", Ordering::Greater),
        ("2:1.0", "1:9.9", Ordering::Greater),
        ("1.0-1-1", "1.0-1", Ordering::Greater),
        ("7.88.1-10+deb12u8", "7.88.1-10+deb12u14", Ordering::Less),
        (
            "1:2.38.1-5+deb12u3",
            "1:2.38.1-5+deb12u2",
            Ordering::Greater,
        ),
        ("3.11.2-1+b1", "3.11.2-1", Ordering::Greater),
        ("1.0~beta1~svn1245", "1.0~beta1", Ordering::Less),
        (
            "99999999999999999999999",
            "99999999999999999999998",
            Ordering::Greater,
        ),
        ("1.0+dfsg", "1.0-dfsg", Ordering::Greater),
        ("0.0~git20200101", "0", Ordering::Greater),
    ];

    #[test]
    fn table() {
        for (a, b, want) in TABLE {
            assert_eq!(compare_versions(a, b), *want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn dpkg_agrees() {
        let Ok(out) = std::process::Command::new("dpkg").arg("--version").output() else {
            eprintln!("dpkg not installed; skipping");
            return;
        };
        assert!(out.status.success());
        for (a, b, want) in TABLE {
            let op = match want {
                Ordering::Less => "lt",
                Ordering::Equal => "eq",
                Ordering::Greater => "gt",
            };
            let status = std::process::Command::new("dpkg")
                .args(["--compare-versions", a, op, b])
                .status()
                .expect("run dpkg");
            assert!(status.success(), "dpkg disagrees: {a} {op} {b}");
        }
    }

    #[test]
    fn parts_and_errors() {
        let v = Version::parse("2:1.0-3-4").expect("valid");
        assert_eq!(v.epoch(), 2);
        assert_eq!(v.upstream(), "1.0-3");
        assert_eq!(v.revision(), "4");
        assert!(Version::parse("").is_err());
        assert!(Version::parse("x:1").is_err());
        assert!(Version::parse("1.0 1").is_err());
        assert!(Version::parse("1.0-").is_err());
        assert!(Version::parse("abc").is_err());
    }
}
