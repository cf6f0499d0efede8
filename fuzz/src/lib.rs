//! Helpers shared by the fuzz targets: turning a fuzzer's bytes into inputs that get past the
//! checksums and digests a mutation would break, so the parsers behind them are reached.

use std::path::Path;

/// The separator between the parts of a multi-part input (`index.json`, manifest, ...).
pub const SEPARATOR: &[u8] = b"\n--\n";

/// Splits `data` into at most `n` parts at [`SEPARATOR`]; the last part keeps the rest.
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: big-endian binary after the marker bit.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

/// Rewrites the header checksum of every tar header in `tar` (following the size fields), so
/// a mutated header is parsed instead of refused as corrupt. Stops at the first header whose
/// size cannot be read.
pub fn fix_tar_checksums(tar: &mut [u8]) {
    let mut at = 0usize;
    while at + 512 <= tar.len() {
        let block = &mut tar[at..at + 512];
        if block.iter().all(|b| *b == 0) {
            at += 512;
            continue;
        }
        let Some(size) = octal(&block[124..136]) else {
            return;
        };
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
        let text = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(&text.as_bytes()[..8]);
        let Some(next) = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_add(511))
            .map(|s| s / 512 * 512)
            .and_then(|s| at.checked_add(512 + s))
        else {
            return;
        };
        at = next;
    }
}

/// Fixes the checksums of the uncompressed tar members (`control.tar`, `data.tar`) of the ar
/// archive `deb`.
pub fn fix_deb_tars(deb: &mut [u8]) {
    let mut at = 8usize;
    while at + 60 <= deb.len() {
        let name = String::from_utf8_lossy(&deb[at..at + 16])
            .trim_end()
            .to_owned();
        let Some(size) = std::str::from_utf8(&deb[at + 48..at + 58])
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
        else {
            return;
        };
        let start = at + 60;
        let end = start.saturating_add(size).min(deb.len());
        if name.trim_end_matches('/').ends_with(".tar") {
            fix_tar_checksums(&mut deb[start..end]);
        }
        at = end + (size % 2);
    }
}

/// A tar of `members` (name, bytes), regular files with mode 0644.
pub fn tar_of(members: &[(String, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in members {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        if b.append_data(&mut h, name, *bytes).is_err() {
            continue;
        }
    }
    b.into_inner().unwrap_or_default()
}

/// Writes `bytes` to `path`; false when it cannot (the input is then skipped).
pub fn write(path: &Path, bytes: &[u8]) -> bool {
    path.parent()
        .is_none_or(|p| std::fs::create_dir_all(p).is_ok())
        && std::fs::write(path, bytes).is_ok()
}
