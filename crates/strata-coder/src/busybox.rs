//! The applets a busybox binary provides, read from the binary itself.
//!
//! Busybox keeps the names of its applets as one sorted run of NUL-terminated strings
//! (`[`, `[[`, `acpid`, …). A link named `wget` to a busybox built without the wget applet
//! fails at run time with `wget: applet not found`, so a check that only sees the link would
//! pass an image that cannot work; the applet list tells them apart without running anything.

use std::collections::BTreeSet;

/// Shortest run of sorted names taken for the applet list (a real busybox has dozens).
const MIN_APPLETS: usize = 8;
/// Longest applet name considered.
const MAX_NAME: usize = 32;

fn applet_like(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"[_.-".contains(b))
}

/// The applet names of the busybox binary `binary`: the longest run of strictly ascending,
/// NUL-separated, applet-like names. `None` when the bytes hold no such run (not a busybox, or
/// one whose list is stored differently).
pub fn applets(binary: &[u8]) -> Option<BTreeSet<String>> {
    let mut best: (usize, usize) = (0, 0);
    let mut run_start = 0;
    let mut run_len = 0;
    let mut last: &[u8] = &[];
    let mut tokens: Vec<&[u8]> = Vec::new();
    for token in binary.split(|b| *b == 0) {
        let ok = applet_like(token);
        if ok && run_len > 0 && token > last {
            run_len += 1;
        } else {
            if run_len > best.1 {
                best = (run_start, run_len);
            }
            run_start = tokens.len();
            run_len = usize::from(ok);
        }
        if ok {
            last = token;
        }
        tokens.push(token);
    }
    if run_len > best.1 {
        best = (run_start, run_len);
    }
    if best.1 < MIN_APPLETS {
        return None;
    }
    Some(
        tokens[best.0..best.0 + best.1]
            .iter()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sorted_name_list_among_other_strings() {
        let mut bin = b"\x7fELF\0junk\0usage: %s\0".to_vec();
        bin.extend_from_slice(b"[\0[[\0ash\0cat\0chmod\0env\0mktemp\0sh\0sleep\0wget\0");
        bin.extend_from_slice(b"\0BusyBox v1\0zzz\0");
        let set = applets(&bin).expect("a list");
        assert!(set.contains("mktemp") && set.contains("wget") && set.contains("["));
        assert!(!set.contains("junk") && !set.contains("zzz"));
        assert_eq!(applets(b"no\0list\0here\0"), None);
        assert_eq!(applets(b""), None);
    }

    /// The busybox of the machine, when there is one (Debian's busybox-static).
    #[test]
    fn reads_the_hosts_busybox() {
        let Ok(bin) = std::fs::read("/bin/busybox") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no /bin/busybox: apt-get install busybox-static"
            );
            eprintln!("skipped: no /bin/busybox (apt-get install busybox-static)");
            return;
        };
        let set = applets(&bin).expect("busybox has an applet list");
        for name in ["sh", "env", "mktemp", "chmod", "sleep", "wget"] {
            assert!(set.contains(name), "{name} missing from {set:?}");
        }
        assert!(!set.contains("curl"));
    }
}
