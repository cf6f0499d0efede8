//! OCI whiteouts: how a layer says that a path of the layers below it is gone.
//!
//! A member named `DIR/.wh.NAME` removes `DIR/NAME` of lower layers; `DIR/.wh..wh..opq` (the
//! opaque marker) hides everything lower layers put in `DIR`. The one place these names are
//! made and recognised.

/// Prefix of a whiteout file's name.
pub const PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker.
pub const OPAQUE: &str = ".wh..wh..opq";

/// What a file name in a layer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// The opaque marker: the directory's lower content is hidden.
    Opaque,
    /// The sibling named this is removed.
    Remove(&'a str),
}

/// Whether the file name `name` (one path component) is a whiteout, and of what. `.wh.`,
/// `.wh..` and `.wh...` name no sibling (removing them would remove the directory itself or
/// its parent) and are not whiteouts.
pub fn parse(name: &str) -> Option<Whiteout<'_>> {
    if name == OPAQUE {
        return Some(Whiteout::Opaque);
    }
    name.strip_prefix(PREFIX)
        .filter(|hidden| !matches!(*hidden, "" | "." | "..") && !hidden.contains('/'))
        .map(Whiteout::Remove)
}

/// The whiteout file name that removes the sibling `name`.
pub fn name_for(name: &str) -> String {
    format!("{PREFIX}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse(".wh..wh..opq"), Some(Whiteout::Opaque));
        assert_eq!(parse(".wh.old.conf"), Some(Whiteout::Remove("old.conf")));
        assert_eq!(parse(".wh."), None);
        assert_eq!(parse(".wh.."), None);
        assert_eq!(parse(".wh..."), None);
        assert_eq!(parse("file"), None);
        assert_eq!(name_for("a"), ".wh.a");
        assert_eq!(parse(&name_for("a")), Some(Whiteout::Remove("a")));
    }
}
