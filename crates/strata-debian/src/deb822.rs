//! The deb822 control format (`Packages`, `Release`, `control`) and dependency fields.

use crate::version::Version;

/// One paragraph of a control file: its fields in order, values with continuation lines
/// joined by `\n` and the leading space of each continuation line kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph<'a> {
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Paragraph<'a> {
    /// The value of a field (case-insensitive name), trimmed.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// All fields in order.
    pub fn fields(&self) -> &[(&'a str, &'a str)] {
        &self.fields
    }
}

/// Splits a control file into paragraphs. Comment lines (`#`) are skipped; malformed lines
/// (no colon, not a continuation) are an error naming the line.
pub fn paragraphs(text: &str) -> impl Iterator<Item = Result<Paragraph<'_>, String>> + '_ {
    let mut rest = text;
    std::iter::from_fn(move || {
        let mut para = Paragraph::default();
        // Fields: (name, start offset of value in `rest`, end offset)
        loop {
            if rest.is_empty() {
                return if para.fields.is_empty() {
                    None
                } else {
                    Some(Ok(para))
                };
            }
            let (line, next) = match rest.find('\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, ""),
            };
            let line_trim = line.trim_end_matches('\r');
            if line_trim.trim().is_empty() {
                rest = next;
                if para.fields.is_empty() {
                    continue;
                }
                return Some(Ok(para));
            }
            if line_trim.starts_with('#') {
                rest = next;
                continue;
            }
            if line_trim.starts_with([' ', '\t']) {
                // Continuation: extend the last value to the end of this line.
                let Some(last) = para.fields.last_mut() else {
                    // Past the bad line, so a caller that goes on after the error (the
                    // resolver's `flatten`) is not handed the same error forever.
                    rest = next;
                    return Some(Err(format!("continuation line before any field: {line}")));
                };
                let start = last.1.as_ptr() as usize - text.as_ptr() as usize;
                let end = line_trim.as_ptr() as usize - text.as_ptr() as usize + line_trim.len();
                last.1 = &text[start..end];
                rest = next;
                continue;
            }
            let Some(colon) = line_trim.find(':') else {
                rest = next;
                return Some(Err(format!("line without a field name: {line}")));
            };
            let name = &line_trim[..colon];
            let value = &line_trim[colon + 1..];
            para.fields.push((name, value));
            rest = next;
        }
    })
}

/// A version relation operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    /// `<<`
    Less,
    /// `<=` (or the obsolete `<`)
    LessEq,
    /// `=`
    Eq,
    /// `>=` (or the obsolete `>`)
    GreaterEq,
    /// `>>`
    Greater,
}

impl Relation {
    /// Whether `have` satisfies `have OP want`.
    pub fn holds(self, have: &Version, want: &Version) -> bool {
        let ord = have.cmp(want);
        match self {
            Relation::Less => ord.is_lt(),
            Relation::LessEq => ord.is_le(),
            Relation::Eq => ord.is_eq(),
            Relation::GreaterEq => ord.is_ge(),
            Relation::Greater => ord.is_gt(),
        }
    }

    /// The operator as written in control files.
    pub fn as_str(self) -> &'static str {
        match self {
            Relation::Less => "<<",
            Relation::LessEq => "<=",
            Relation::Eq => "=",
            Relation::GreaterEq => ">=",
            Relation::Greater => ">>",
        }
    }
}

/// One alternative of a dependency: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    /// Package name.
    pub name: String,
    /// Architecture qualifier (`any`, `native`, or an architecture).
    pub arch: Option<String>,
    /// Version constraint.
    pub constraint: Option<(Relation, Version)>,
}

impl std::fmt::Display for Dep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some(a) = &self.arch {
            write!(f, ":{a}")?;
        }
        if let Some((op, v)) = &self.constraint {
            write!(f, " ({} {v})", op.as_str())?;
        }
        Ok(())
    }
}

/// A dependency field: a list of or-groups of alternatives.
pub type DepList = Vec<Vec<Dep>>;

/// Formats an or-group as written in a control file.
pub fn format_group(group: &[Dep]) -> String {
    group
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Parses a dependency field (`Depends`, `Pre-Depends`, `Provides`, ...). Architecture
/// restriction lists (`[amd64]`) and build profiles (`<!nocheck>`) are accepted and ignored,
/// as they never appear in binary package indices.
pub fn parse_deps(field: &str) -> Result<DepList, String> {
    let mut out = Vec::new();
    for group in field.split(',') {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for alt in group.split('|') {
            alts.push(parse_dep(alt.trim()).map_err(|e| format!("`{}`: {e}", alt.trim()))?);
        }
        out.push(alts);
    }
    Ok(out)
}

fn parse_dep(text: &str) -> Result<Dep, String> {
    // Drop architecture restrictions and build profiles, which follow the constraint.
    let mut cut = text.len();
    let mut in_paren = false;
    for (i, c) in text.char_indices() {
        match c {
            '(' => in_paren = true,
            ')' => in_paren = false,
            '[' | '<' if !in_paren => {
                cut = i;
                break;
            }
            _ => {}
        }
    }
    let s = &text[..cut];
    let s = s.trim();
    let (head, constraint) = match s.find('(') {
        Some(i) => {
            let close = s[i..]
                .find(')')
                .ok_or_else(|| "unclosed version constraint".to_string())?;
            (&s[..i], Some(s[i + 1..i + close].trim()))
        }
        None => (s, None),
    };
    let head = head.trim();
    if head.is_empty() {
        return Err("missing package name".into());
    }
    let (name, arch) = match head.split_once(':') {
        Some((n, a)) => (n.trim(), Some(a.trim().to_owned())),
        None => (head, None),
    };
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err("invalid package name".into());
    }
    let constraint = match constraint {
        None => None,
        Some(c) => {
            let op_len = c
                .find(|ch: char| !matches!(ch, '<' | '>' | '='))
                .unwrap_or(c.len());
            let op = match &c[..op_len] {
                "<<" => Relation::Less,
                "<=" | "<" => Relation::LessEq,
                "=" => Relation::Eq,
                ">=" | ">" => Relation::GreaterEq,
                ">>" => Relation::Greater,
                other => return Err(format!("unknown relation `{other}`")),
            };
            let v = Version::parse(&c[op_len..]).map_err(|e| e.to_string())?;
            Some((op, v))
        }
    };
    Ok(Dep {
        name: name.to_owned(),
        arch,
        constraint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_with_continuations() {
        let text =
            "Package: a\nDescription: x\n more\n .\n end\n\n\n# c\nPackage: b\r\nVersion: 1\n";
        let ps: Vec<_> = paragraphs(text).collect::<Result<_, _>>().expect("parse");
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("package"), Some("a"));
        assert_eq!(ps[0].get("Description"), Some("x\n more\n .\n end"));
        assert_eq!(ps[1].get("Version"), Some("1"));
        assert!(paragraphs("bad line\n").next().is_some_and(|r| r.is_err()));
    }

    /// Found by the `deb822` fuzz target (a timeout): a continuation line at the start of a
    /// paragraph was an error that did not consume the line, so iterating on after it (as the
    /// resolver's `flatten` does over a signed index) never ended.
    #[test]
    fn continuation_line_at_a_paragraph_start_does_not_hang() {
        let text = "Package: a\n\n continued\nPackage: b\n";
        let all: Vec<_> = paragraphs(text).take(10).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(
            all[1]
                .as_ref()
                .is_err_and(|e| e.contains("continuation line before any field"))
        );
        let ok: Vec<_> = paragraphs(text).flatten().collect();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].get("Package"), Some("a"));
        assert_eq!(ok[1].get("Package"), Some("b"));

        // The input the fuzzer found: a line without a colon, then a continuation line.
        let found = "Package: a\nVersion: 1:2.3~rc1-4+b1\n <!nocheck>\nDescriptionz x\n Version: 1:2.3~rc1-4+b1\n <!nocheck>\nDescription: xmulti\n .\n lineh";
        assert!(paragraphs(found).take(100).count() < 100);
    }

    #[test]
    fn dependencies() {
        let d = parse_deps(
            "libc6 (>= 2.34), python3:any, a | b (<< 2:1.0~) , c [amd64] <!nocheck>, d (> 1)",
        )
        .expect("parse");
        assert_eq!(d.len(), 5);
        assert_eq!(d[0][0].name, "libc6");
        assert_eq!(
            d[0][0].constraint.as_ref().map(|c| c.0),
            Some(Relation::GreaterEq)
        );
        assert_eq!(d[1][0].arch.as_deref(), Some("any"));
        assert_eq!(d[2].len(), 2);
        assert_eq!(d[2][1].to_string(), "b (<< 2:1.0~)");
        assert_eq!(d[3][0].name, "c");
        assert_eq!(
            d[4][0].constraint.as_ref().map(|c| c.0),
            Some(Relation::GreaterEq)
        );
        assert!(parse_deps("a (>= )").is_err());
        assert!(parse_deps("a (~~ 1)").is_err());
    }
}
