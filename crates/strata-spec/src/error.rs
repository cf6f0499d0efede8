//! Errors, and the file positions they point at.

use std::fmt;
use std::path::PathBuf;

/// A position in a spec file: the file as it was named when loading, a 1-based line and a
/// 1-based column (counted in characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The spec file, as given to [`Spec::load`](crate::Spec::load) or
    /// [`Spec::parse`](crate::Spec::parse).
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// What is wrong with one key or value of a spec. The message names the problem and what to do
/// about it; the key path and position are kept by the surrounding [`Diagnostic`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A key that this table does not know (often a typo).
    #[error("unknown key (expected one of: {})", .expected.join(", "))]
    UnknownKey {
        /// The keys this table accepts.
        expected: Vec<&'static str>,
    },
    /// A value of the wrong TOML type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What the key accepts, with an example.
        expected: String,
        /// The TOML type that was written, with its article ("a string").
        found: &'static str,
    },
    /// A key that must be present is absent.
    #[error("missing required key ({hint})")]
    Missing {
        /// What the key means and how to write it.
        hint: String,
    },
    /// A value of the right type that cannot be used.
    #[error("{reason} ({hint})")]
    Invalid {
        /// What is wrong with the value.
        reason: String,
        /// What to write instead.
        hint: String,
    },
}

/// One problem found in a spec file, with where it is and which key it concerns.
///
/// Displays as `file:line:column: dotted.key[0].path: problem (what to do)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the offending key or value is.
    pub location: Location,
    /// The dotted key path, e.g. `base.tree[0].mode`.
    pub key: String,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.location, self.key, self.problem)
    }
}

/// Why a spec could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec file could not be read.
    #[error("{}: cannot read the spec file", .path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{location}: invalid TOML: {message} (fix the syntax; see https://toml.io)")]
    Syntax {
        /// Where the parser stopped.
        location: Location,
        /// The parser's explanation.
        message: String,
    },
    /// The file is valid TOML but not a valid spec. Every problem found is listed, in file order,
    /// one per line.
    #[error("{}", DiagnosticList(.0))]
    Invalid(Vec<Diagnostic>),
}

impl SpecError {
    /// The individual problems of an [`SpecError::Invalid`] error (empty for other kinds).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            SpecError::Invalid(list) => list,
            _ => &[],
        }
    }
}

struct DiagnosticList<'a>(&'a [Diagnostic]);

impl fmt::Display for DiagnosticList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}
