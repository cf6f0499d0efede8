//! The colon-separated account databases: `/etc/passwd`, `/etc/group`, `/etc/shadow` and
//! `/etc/gshadow`, read leniently (comments, blank and malformed lines are kept as they are).

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Supplementary members.
    pub members: Vec<String>,
}

/// The well-formed entries of a passwd file.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || line.starts_with('#') {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
                shell: f[6].to_owned(),
            })
        })
        .collect()
}

/// The well-formed entries of a group file.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || line.starts_with('#') {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
                members: split_members(f[3]),
            })
        })
        .collect()
}

fn split_members(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The names of the entries of any of the four files (the first field of each line).
pub fn names(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(':'))
        .filter_map(|l| l.split(':').next())
        .collect()
}

/// Adds `member` to the member list (field `field`, 0-based) of the line for group `group`, in
/// a group or gshadow file. Other lines are kept byte for byte.
pub fn add_member(text: &str, group: &str, member: &str, field: usize) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut f: Vec<String> = line.split(':').map(str::to_owned).collect();
        if f.first().map(String::as_str) == Some(group) && f.len() > field {
            let mut members = split_members(&f[field]);
            if !members.iter().any(|m| m == member) {
                members.push(member.to_owned());
            }
            f[field] = members.join(",");
            out.push_str(&f.join(":"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// `text` with a final newline (unless empty) and `line` appended.
pub fn append_line(text: &str, line: &str) -> String {
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_edits() {
        let passwd = "# comment\nroot:x:0:0:root:/root:/bin/bash\nbroken\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        let p = parse_passwd(passwd);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].uid, 65534);
        let group = "root:x:0:\nsudo:x:27:alice\n";
        let g = parse_group(group);
        assert_eq!(g[1].members, ["alice"]);
        let edited = add_member(group, "sudo", "coder", 3);
        assert_eq!(edited, "root:x:0:\nsudo:x:27:alice,coder\n");
        assert_eq!(add_member(&edited, "sudo", "coder", 3), edited);
        assert_eq!(append_line("a", "b"), "a\nb\n");
        assert_eq!(names(group), ["root", "sudo"]);
    }
}
