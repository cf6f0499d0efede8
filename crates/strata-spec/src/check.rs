//! Checks of single values, independent of where they appear in the file.
//!
//! Each check returns the normalised value, or an error pair `(reason, hint)`.

use strata_fstree::{Dest, ImagePath, PathError};

/// `(reason, hint)` of a rejected value.
pub(crate) type Rejection = (String, String);

fn reject(reason: impl Into<String>, hint: impl Into<String>) -> Rejection {
    (reason.into(), hint.into())
}

/// Architectures accepted in `image.architecture`: the values OCI image configs use (Go's
/// `GOARCH` names).
pub(crate) const ARCHITECTURES: &[&str] = &[
    "386", "amd64", "arm", "arm64", "loong64", "mips", "mipsle", "mips64", "mips64le", "ppc64",
    "ppc64le", "riscv64", "s390x", "wasm",
];

/// The OCI name of an architecture as Rust spells it in `std::env::consts::ARCH`.
pub(crate) fn oci_arch(rust_arch: &str) -> Option<&'static str> {
    let little = cfg!(target_endian = "little");
    Some(match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" | "i386" | "i586" | "i686" => "386",
        "arm" | "armv7" => "arm",
        "loongarch64" => "loong64",
        "riscv64" | "riscv64gc" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" if little => "ppc64le",
        "powerpc64" => "ppc64",
        "powerpc64le" => "ppc64le",
        "mips" if little => "mipsle",
        "mips" => "mips",
        "mips64" if little => "mips64le",
        "mips64" => "mips64",
        "wasm32" => "wasm",
        _ => return None,
    })
}

pub(crate) fn architecture(raw: &str) -> Result<String, Rejection> {
    if ARCHITECTURES.contains(&raw) {
        return Ok(raw.to_owned());
    }
    let hint = match oci_arch(raw) {
        Some(oci) => format!("OCI calls this architecture `{oci}`; write architecture = \"{oci}\""),
        None => format!("use one of: {}", ARCHITECTURES.join(", ")),
    };
    Err(reject(format!("`{raw}` is not an OCI architecture"), hint))
}

/// One path component of a repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn repository_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A registry host with an optional port, as the first component of a name.
fn registry_host(c: &str) -> bool {
    let (host, port) = match c.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (c, None),
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || !p.bytes().all(|x| x.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// A repository name prefix such as `strata`, `team/dev`, `ghcr.io/acme/ws` or
/// `localhost:5000/ws`.
pub(crate) fn repository(raw: &str) -> Result<String, Rejection> {
    let hint = "use lowercase letters, digits and single `.`, `_`, `__` or `-` separators between \
                `/`-separated components, e.g. \"strata\" or \"ghcr.io/acme/workspaces\"";
    if raw.is_empty() {
        return Err(reject("the repository name is empty", hint));
    }
    // Room for the `/<32 hex>` the builder appends.
    if raw.len() > 200 {
        return Err(reject(
            format!("the repository name is {} characters long", raw.len()),
            "keep it to at most 200 characters",
        ));
    }
    let parts: Vec<&str> = raw.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let host_like = i == 0
            && parts.len() > 1
            && (part.contains('.') || part.contains(':') || *part == "localhost");
        let ok = if host_like {
            registry_host(part)
        } else {
            repository_component(part)
        };
        if !ok {
            let reason = if part.bytes().any(|b| b.is_ascii_uppercase()) {
                format!("`{raw}` is not a valid repository name: it contains uppercase letters")
            } else {
                format!("`{raw}` is not a valid repository name: bad component `{part}`")
            };
            return Err(reject(reason, hint));
        }
    }
    Ok(raw.to_owned())
}

/// An absolute path in the image, for keys like `dest`. The root itself is refused.
pub(crate) fn image_path(raw: &str, example: &str) -> Result<ImagePath, Rejection> {
    if !raw.starts_with('/') {
        return Err(reject(
            format!("`{raw}` is not an absolute path"),
            format!("write the full path in the image, starting with `/`, e.g. \"{example}\""),
        ));
    }
    ImagePath::new(raw).map_err(|e| match e {
        PathError::Root(_) => reject(
            format!("`{raw}` names the image root"),
            format!("name the file or directory to create, e.g. \"{example}\""),
        ),
        PathError::Escapes(_) => reject(
            format!("`{raw}` climbs above the image root with `..`"),
            "remove the `..` components",
        ),
        PathError::Nul(_) => reject("the path contains a NUL character", "remove it"),
    })
}

/// Where a `tree` entry goes: an absolute image path, or `/` (a directory's contents become
/// the image's top level).
pub(crate) fn tree_dest(raw: &str, example: &str) -> Result<Dest, Rejection> {
    if raw.starts_with('/') && raw.split('/').all(|c| c.is_empty() || c == ".") {
        return Ok(Dest::Root);
    }
    image_path(raw, example).map(Dest::Path)
}

/// An absolute directory in the image, for `workdir`; the root is allowed. Returns the
/// normalised absolute form.
pub(crate) fn image_dir(raw: &str) -> Result<String, Rejection> {
    if raw.starts_with('/') && raw.split('/').all(|c| c.is_empty() || c == ".") {
        return Ok("/".to_owned());
    }
    image_path(raw, "/home/dev").map(|p| p.absolute())
}

/// A host path, absolute or relative to the spec file's directory, normalised lexically (`.` removed, `a/..`
/// folded; leading `..` kept). Returns the normalised string.
pub(crate) fn relative_path(raw: &str, example: &str) -> Result<String, Rejection> {
    if raw.is_empty() {
        return Err(reject(
            "the path is empty",
            format!("give a path relative to the spec file's directory, e.g. \"{example}\""),
        ));
    }
    if raw.contains('\0') {
        return Err(reject("the path contains a NUL character", "remove it"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !raw.starts_with('/') {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    // Absolute host paths are allowed (a host tool, a system keyring); their content, not
    // their location, is what the image hashes cover.
    let lead = if raw.starts_with('/') { "/" } else { "" };
    if parts.is_empty() {
        Ok(if lead.is_empty() {
            ".".to_owned()
        } else {
            "/".to_owned()
        })
    } else {
        Ok(format!("{lead}{}", parts.join("/")))
    }
}

/// Permission bits from an integer.
pub(crate) fn mode_int(value: i64) -> Result<u32, Rejection> {
    match u32::try_from(value) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ if value < 0 => Err(reject(
            format!("mode {value} is negative"),
            "write permission bits as an octal literal, e.g. 0o755",
        )),
        _ => Err(reject(
            format!("mode {value:#o} is larger than 0o7777"),
            "write permission bits only, as an octal literal such as 0o755 or a string such as \
             \"0755\"",
        )),
    }
}

/// Permission bits from a string of octal digits such as `"0755"`.
pub(crate) fn mode_str(raw: &str) -> Result<u32, Rejection> {
    let hint = "write octal digits such as \"0755\", or an octal literal such as 0o755";
    let digits = raw.strip_prefix("0o").unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(reject(
            format!("`{raw}` is not an octal permission mode"),
            hint,
        ));
    }
    let trimmed = digits.trim_start_matches('0');
    if trimmed.len() > 4 {
        return Err(reject(format!("mode `{raw}` is larger than 0o7777"), hint));
    }
    // At most four octal digits: always fits.
    let value = trimmed
        .bytes()
        .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
    if value > 0o7777 {
        return Err(reject(format!("mode `{raw}` is larger than 0o7777"), hint));
    }
    Ok(value)
}

/// A user or group id.
pub(crate) fn id(value: i64) -> Result<u32, Rejection> {
    u32::try_from(value).map_err(|_| {
        reject(
            format!("{value} is not a valid id"),
            "use a number from 0 to 4294967295",
        )
    })
}

/// A user or group name for `[account]`: what Debian's `adduser` accepts by default (a
/// lowercase letter, then lowercase letters, digits, `_` and `-`), at most 32 characters.
pub(crate) fn account_name(raw: &str) -> Result<String, Rejection> {
    let hint = "start with a lowercase letter, then use lowercase letters, digits, `_` and `-`, \
                at most 32 characters, e.g. \"coder\"";
    let b = raw.as_bytes();
    if raw.is_empty() {
        return Err(reject("the name is empty", hint));
    }
    if b.len() > 32
        || !b[0].is_ascii_lowercase()
        || !b
            .iter()
            .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, b'_' | b'-'))
    {
        return Err(reject(format!("`{raw}` is not a valid account name"), hint));
    }
    Ok(raw.to_owned())
}

/// The user id of the workspace account: any id but root's.
pub(crate) fn account_id(value: i64) -> Result<u32, Rejection> {
    match id(value)? {
        0 => Err(reject(
            "uid 0 is root",
            "the workspace account must not be root; use an id such as 1000",
        )),
        n => Ok(n),
    }
}

/// The comment (GECOS) field of a passwd entry: no `:` and no line breaks.
pub(crate) fn gecos(raw: &str) -> Result<String, Rejection> {
    if raw.chars().any(|c| c == ':' || c.is_control()) {
        return Err(reject(
            "the comment contains `:` or a control character",
            "remove them: /etc/passwd separates its fields with `:`",
        ));
    }
    Ok(raw.to_owned())
}

/// A size: a number of bytes, or a number with a binary suffix `K`, `M`, `G`, `T` (`512M`,
/// `4G`; `KiB`, `MiB`, ... are accepted too).
pub(crate) fn size(raw: &str) -> Result<u64, Rejection> {
    let bad = || {
        (
            format!("`{raw}` is not a size"),
            "write bytes or a number with K, M, G or T, like \"512M\" or \"4G\"".to_owned(),
        )
    };
    let s = raw.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// One kernel command line argument: no white space, quotes or NUL.
pub(crate) fn kernel_arg(raw: &str) -> Result<String, Rejection> {
    if raw.is_empty()
        || raw
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\0')
    {
        return Err((
            format!("`{raw}` is not one kernel command line argument"),
            "write each argument as its own string, without spaces or quotes".to_owned(),
        ));
    }
    Ok(raw.to_owned())
}

/// A host name: 1 to 63 letters, digits and `-`, not starting or ending with `-`.
pub(crate) fn hostname(raw: &str) -> Result<String, Rejection> {
    let ok = !raw.is_empty()
        && raw.len() <= 63
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !raw.starts_with('-')
        && !raw.ends_with('-');
    if !ok {
        return Err((
            format!("`{raw}` is not a host name"),
            "use 1 to 63 letters, digits and `-`, like \"ws-1\"".to_owned(),
        ));
    }
    Ok(raw.to_owned())
}

/// A volume ID: 1 to 32 upper-case letters, digits and `_` (what ISO 9660 allows; the ESP's
/// FAT label takes the first 11).
pub(crate) fn volume_id(raw: &str) -> Result<String, Rejection> {
    let ok = !raw.is_empty()
        && raw.len() <= 32
        && raw
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err((
            format!("`{raw}` is not a volume ID"),
            "use 1 to 32 upper-case letters, digits and `_`, like \"CODER_BOX\"".to_owned(),
        ));
    }
    Ok(raw.to_owned())
}

/// A Debian package name (Debian Policy 5.6.1), without version or architecture qualifiers.
pub(crate) fn debian_package(raw: &str) -> Result<String, Rejection> {
    if raw.is_empty() {
        return Err(reject(
            "the package name is empty",
            "remove the empty string or write a package name such as \"bash\"",
        ));
    }
    let b = raw.as_bytes();
    let ok_char =
        |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, b'+' | b'-' | b'.');
    if raw.contains('=') || raw.contains(':') {
        return Err(reject(
            format!("`{raw}` is not a plain package name"),
            "write only the name, e.g. \"bash\": versions are pinned by the lock file and the \
             architecture comes from image.architecture",
        ));
    }
    if b.len() < 2
        || !(b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        || !b.iter().all(ok_char)
    {
        return Err(reject(
            format!("`{raw}` is not a valid Debian package name"),
            "package names have at least two characters: lowercase letters, digits, `+`, `-` \
             and `.`, starting with a letter or digit",
        ));
    }
    Ok(raw.to_owned())
}

/// A Debian suite or codename such as `bookworm` or `bookworm-backports`.
pub(crate) fn debian_suite(raw: &str) -> Result<String, Rejection> {
    let b = raw.as_bytes();
    if b.is_empty()
        || !b[0].is_ascii_alphanumeric()
        || !b
            .iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'-' | b'.' | b'_'))
    {
        return Err(reject(
            format!("`{raw}` is not a suite name"),
            "write a codename such as \"bookworm\" or \"trixie\"",
        ));
    }
    Ok(raw.to_owned())
}

/// A Debian archive component such as `main` or `non-free-firmware`.
pub(crate) fn debian_component(raw: &str) -> Result<String, Rejection> {
    let b = raw.as_bytes();
    if b.is_empty()
        || !b[0].is_ascii_lowercase()
        || !b
            .iter()
            .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || *x == b'-')
    {
        return Err(reject(
            format!("`{raw}` is not an archive component"),
            "write a component such as \"main\", \"contrib\" or \"non-free-firmware\"",
        ));
    }
    Ok(raw.to_owned())
}

/// A mirror URL; trailing slashes are dropped.
pub(crate) fn mirror_url(raw: &str) -> Result<String, Rejection> {
    let hint = "write an http://, https:// or file:// URL such as \"http://deb.debian.org/debian\"";
    let rest = ["http://", "https://", "file://"]
        .iter()
        .find_map(|scheme| raw.strip_prefix(scheme));
    match rest {
        None => Err(reject(format!("`{raw}` is not a mirror URL"), hint)),
        Some(rest)
            if rest.trim_end_matches('/').is_empty()
                || raw.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Err(reject(format!("`{raw}` is not a mirror URL"), hint))
        }
        Some(_) => Ok(raw.trim_end_matches('/').to_owned()),
    }
}

/// The URL of a download: `http://` or `https://` with a host. Messages show it without
/// credentials.
pub(crate) fn download_url(raw: &str) -> Result<String, Rejection> {
    let hint = "write an http:// or https:// URL such as \"https://example.org/tool.tar.gz\"";
    let shown = without_credentials(raw);
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| raw.strip_prefix(scheme));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && !raw.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(raw.to_owned())
        }
        _ => Err(reject(format!("`{shown}` is not a download URL"), hint)),
    }
}

/// A URL with any `user:password@` removed (for hashing and messages).
pub(crate) fn without_credentials(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[i + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}{}", &url[..i + 3], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// A Python requirement (PEP 508 without URLs or options: a name, extras, version
/// specifiers, markers). The resolver checks the rest.
pub(crate) fn python_requirement(raw: &str) -> Result<String, Rejection> {
    let hint = "write a requirement such as \"rich\", \"requests>=2.31\" or \"ansible==9.1.0\"";
    let name_ok = raw
        .trim_start()
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !name_ok {
        return Err(reject(format!("`{raw}` is not a Python requirement"), hint));
    }
    if raw.starts_with('-') || raw.contains("://") || raw.contains(['\n', '\r', '\0']) {
        return Err(reject(
            format!("`{raw}` is not a plain requirement (no options or URLs)"),
            hint,
        ));
    }
    Ok(raw.trim().to_owned())
}

/// A SHA-256 in hex (either case, optionally prefixed `sha256:`), returned in lowercase.
pub(crate) fn sha256(raw: &str) -> Result<String, Rejection> {
    let raw = raw.strip_prefix("sha256:").unwrap_or(raw);
    if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(reject(
            format!("`{raw}` is not a SHA-256 (64 hex digits)"),
            "copy the hash from the release page or `sha256sum`, or remove the key and run \
             `strata lock` to record it",
        ))
    }
}

/// A Nix installable as the `nix` command line takes it (flake reference or path).
pub(crate) fn nix_installable(raw: &str) -> Result<String, Rejection> {
    if raw.is_empty() {
        return Err(reject(
            "the installable is empty",
            "write a flake reference such as \".#hello\" or \"nixpkgs#hello\", or a path such as \
             \"./default.nix\"",
        ));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(reject(
            format!("`{raw}` contains whitespace"),
            "give one installable per string",
        ));
    }
    Ok(raw.to_owned())
}

/// The alphabet of Nix store path hashes.
const NIX_BASE32: &str = "0123456789abcdfghijklmnpqrsvwxyz";

/// A Nix store path `/nix/store/<32 chars>-<name>`.
pub(crate) fn nix_store_path(raw: &str) -> Result<String, Rejection> {
    let hint = "write a store path such as \"/nix/store/<32-character hash>-hello-2.12.1\"";
    let bad = || reject(format!("`{raw}` is not a Nix store path"), hint);
    let rest = raw.strip_prefix("/nix/store/").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    let (hash, name) = match (rest.get(..32), rest.get(32..)) {
        (Some(h), Some(n)) => (h, n),
        _ => return Err(bad()),
    };
    let name = name.strip_prefix('-').ok_or_else(bad)?;
    if !hash.chars().all(|c| NIX_BASE32.contains(c))
        || name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
    {
        return Err(bad());
    }
    Ok(format!("/nix/store/{hash}-{name}"))
}

/// An environment variable name.
pub(crate) fn env_name(raw: &str) -> Result<String, Rejection> {
    if raw.is_empty() || raw.contains('=') || raw.contains('\0') {
        return Err(reject(
            format!("`{raw}` is not a usable environment variable name"),
            "use a non-empty name without `=`, such as PATH",
        ));
    }
    Ok(raw.to_owned())
}

/// A string that must not hold NUL characters (they cannot be passed to a process).
pub(crate) fn no_nul(raw: &str) -> Result<String, Rejection> {
    if raw.contains('\0') {
        return Err(reject("the value contains a NUL character", "remove it"));
    }
    Ok(raw.to_owned())
}

/// The `user` of the image config: `name`, `uid`, `name:group` or `uid:gid`.
pub(crate) fn config_user(raw: &str) -> Result<String, Rejection> {
    let hint = "write a user name or id, optionally with a group: \"dev\", \"1000\", \"dev:dev\" \
                or \"1000:1000\"";
    if raw.is_empty() {
        return Err(reject("the user is empty", hint));
    }
    let mut parts = raw.split(':');
    let ok = parts.clone().count() <= 2
        && parts.all(|p| {
            !p.is_empty()
                && !p
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        });
    if !ok {
        return Err(reject(format!("`{raw}` is not a user specification"), hint));
    }
    Ok(raw.to_owned())
}

/// An exposed port: `8080`, `8080/tcp`, `53/udp` or `9/sctp`; returns `PORT/PROTO`.
pub(crate) fn port(raw: &str) -> Result<String, Rejection> {
    let hint = "write a port from 1 to 65535 with an optional protocol: \"8080\", \"8080/tcp\", \
                \"53/udp\" or \"9/sctp\"";
    let (num, proto) = match raw.split_once('/') {
        Some((n, p)) => (n, p.to_ascii_lowercase()),
        None => (raw, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(reject(format!("`{raw}` has an unknown protocol"), hint));
    }
    if num.is_empty() || num.len() > 5 || !num.bytes().all(|b| b.is_ascii_digit()) {
        let reason = if num.contains('-') {
            format!("`{raw}` is a port range, which OCI images cannot expose")
        } else {
            format!("`{raw}` is not a port")
        };
        return Err(reject(reason, hint));
    }
    match num.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(format!("{n}/{proto}")),
        _ => Err(reject(format!("port `{num}` is out of range"), hint)),
    }
}

/// A `debconf-set-selections` line: `OWNER QUESTION TYPE VALUE` (the value may be empty or
/// hold spaces); whitespace runs between the first three fields become one space.
pub(crate) fn debconf_line(raw: &str) -> Result<String, Rejection> {
    let bad = || {
        reject(
            format!("`{raw}` is not a debconf answer"),
            "write `OWNER QUESTION TYPE VALUE` as debconf-set-selections reads it, such as \
             \"tzdata tzdata/Areas select Europe\"",
        )
    };
    if raw.contains(['\n', '\0']) {
        return Err(bad());
    }
    let mut rest = raw.trim();
    let mut fields = Vec::new();
    for _ in 0..3 {
        let (field, tail) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
        if field.is_empty() {
            return Err(bad());
        }
        fields.push(field);
        rest = tail.trim_start();
    }
    let known = [
        "select",
        "multiselect",
        "string",
        "boolean",
        "note",
        "text",
        "password",
        "title",
        "error",
    ];
    if !fields[1].contains('/') || !known.contains(&fields[2]) {
        return Err(bad());
    }
    Ok(format!("{} {} {} {rest}", fields[0], fields[1], fields[2])
        .trim_end()
        .to_owned())
}

/// A systemd unit name (`docker`, `ssh.socket`, `getty@tty1.service`).
pub(crate) fn unit_name(raw: &str) -> Result<String, Rejection> {
    let ok = !raw.is_empty()
        && !raw.starts_with('.')
        && raw.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':' | b'\\')
        });
    if !ok {
        return Err(reject(
            format!("`{raw}` is not a systemd unit name"),
            "write a unit such as \"docker\" (docker.service) or \"ssh.socket\"",
        ));
    }
    Ok(raw.to_owned())
}

/// Ubuntu release codenames (the suite, without a `-updates`/`-security`/... pocket).
const UBUNTU_CODENAMES: &[&str] = &[
    "trusty", "xenial", "bionic", "focal", "jammy", "kinetic", "lunar", "mantic", "noble",
    "oracular", "plucky", "questing",
];

/// Whether a suite is an Ubuntu release or one of its pockets (`jammy`, `noble-updates`).
pub(crate) fn is_ubuntu_suite(suite: &str) -> bool {
    let codename = suite.split('-').next().unwrap_or(suite);
    UBUNTU_CODENAMES.contains(&codename)
}

/// A PPA reference `owner/name` (Launchpad user or team, and archive name).
pub(crate) fn ppa(raw: &str) -> Result<(String, String), Rejection> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'+')
            })
    };
    let raw = raw.strip_prefix("ppa:").unwrap_or(raw);
    match raw.split_once('/') {
        Some((owner, name)) if ok(owner) && ok(name) => Ok((owner.to_owned(), name.to_owned())),
        _ => Err(reject(
            format!("`{raw}` is not a PPA"),
            "write the Launchpad owner and archive name, such as \"git-core/ppa\"",
        )),
    }
}

/// A repository name: lowercase letters, digits and `-`, as apt's file names in
/// `/etc/apt/sources.list.d`.
pub(crate) fn repo_name(raw: &str) -> Result<String, Rejection> {
    let b = raw.as_bytes();
    if b.is_empty()
        || !b[0].is_ascii_alphanumeric()
        || !b
            .iter()
            .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, b'-' | b'_'))
        || raw == "main"
    {
        return Err(reject(
            format!("`{raw}` is not a repository name"),
            "write lowercase letters, digits and `-`, such as \"docker\" (\"main\" is the main archive)",
        ));
    }
    Ok(raw.to_owned())
}

/// A dpkg architecture name (`amd64`, `arm64`, `all` is not one).
pub(crate) fn dpkg_arch(raw: &str) -> Result<String, Rejection> {
    if raw.is_empty()
        || !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(reject(
            format!("`{raw}` is not an architecture"),
            "write a dpkg architecture such as \"amd64\" or \"arm64\"",
        ));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories() {
        for ok in [
            "strata",
            "team/dev-env",
            "a__b/c.d/e--f",
            "ghcr.io/acme/ws",
            "localhost:5000/ws",
            "localhost/ws",
        ] {
            assert_eq!(repository(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "", "Strata", "a//b", "-a", "a-", "a..b", "a___b", "/a", "a/", "host:x/a", "a b",
        ] {
            assert!(repository(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(mode_str("0755"), Ok(0o755));
        assert_eq!(mode_str("755"), Ok(0o755));
        assert_eq!(mode_str("4755"), Ok(0o4755));
        assert_eq!(mode_str("00644"), Ok(0o644));
        assert!(mode_str("10000").is_err());
        assert!(mode_str("0789").is_err());
        assert!(mode_str("").is_err());
        assert!(mode_str("0o0o7").is_err());
        assert_eq!(mode_int(0o7777), Ok(0o7777));
        assert!(mode_int(0o10000).is_err());
        assert!(mode_int(-1).is_err());
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path("./files//a/../b", "x").as_deref(),
            Ok("files/b")
        );
        assert_eq!(
            relative_path("../shared/x", "x").as_deref(),
            Ok("../shared/x")
        );
        assert_eq!(relative_path("a/../..", "x").as_deref(), Ok(".."));
        assert_eq!(relative_path("./", "x").as_deref(), Ok("."));
        assert_eq!(
            relative_path("/etc//x/../passwd", "x").as_deref(),
            Ok("/etc/passwd")
        );
        assert_eq!(relative_path("/../bin", "x").as_deref(), Ok("/bin"));
        assert!(relative_path("", "x").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(port("8080").as_deref(), Ok("8080/tcp"));
        assert_eq!(port("53/UDP").as_deref(), Ok("53/udp"));
        assert!(port("0").is_err());
        assert!(port("65536").is_err());
        assert!(port("80/http").is_err());
        assert!(port("8000-8010").is_err());
    }

    #[test]
    fn store_paths_and_packages() {
        let p = "/nix/store/0c0i1ynqbbwdjiqkml2dvdqi5vmc8qxp-hello-2.12.1";
        assert_eq!(nix_store_path(p).as_deref(), Ok(p));
        assert!(nix_store_path("/nix/store/abc-hello").is_err());
        assert!(nix_store_path("/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x").is_err());
        assert!(debian_package("libstdc++6").is_ok());
        assert!(debian_package("a").is_err());
        assert!(debian_package("Bash").is_err());
        assert!(debian_package("bash=5.2").is_err());
        assert_eq!(
            mirror_url("http://m/debian/").as_deref(),
            Ok("http://m/debian")
        );
        assert!(mirror_url("ftp://m").is_err());
    }

    #[test]
    fn architectures() {
        assert_eq!(architecture("arm64").as_deref(), Ok("arm64"));
        let (_, hint) = architecture("x86_64").expect_err("rust name");
        assert!(hint.contains("amd64"), "{hint}");
        assert_eq!(oci_arch("aarch64"), Some("arm64"));
    }
}
