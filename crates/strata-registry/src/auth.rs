//! Credentials: the redacting [`Credentials`] type, `WWW-Authenticate`
//! challenges, Docker's `config.json` / podman's `auth.json`, credential
//! helpers, and [`login`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::RegistryError;
use crate::reference::DOCKER_HUB;

/// A username and a password (or token) for a registry.
///
/// Its `Debug` output shows the username only; the password is never
/// printed, and there is deliberately no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    password: String,
}

impl Credentials {
    /// Credentials from a username and a password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The password (or token). Handle with care: never log it.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The value of an `Authorization: Basic ...` header for these credentials.
    pub(crate) fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            B64.encode(format!("{}:{}", self.username, self.password))
        )
    }

    /// Decodes Docker's base64 `auth` field (`user:password`).
    fn from_auth_field(field: &str) -> Option<Self> {
        let decoded = B64.decode(field.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, pass) = text.split_once(':')?;
        Some(Credentials::new(user, pass))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl FromStr for Credentials {
    type Err = RegistryError;
    /// Parses `USER:PASSWORD` (as given to `--creds`). The error never
    /// repeats the text.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((user, pass)) if !user.is_empty() => Ok(Credentials::new(user, pass)),
            _ => Err(RegistryError::InvalidCredentials(
                "expected USERNAME:PASSWORD with a non-empty username".into(),
            )),
        }
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm="..."`.
    Basic,
    /// `Bearer realm="...",service="...",scope="..."`.
    Bearer {
        /// Where to fetch tokens.
        realm: String,
        /// The `service` parameter for the token request.
        service: Option<String>,
        /// The scope the registry asked for, if it said.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header value. Unknown schemes give `None`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_auth_params(rest);
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    } else {
        None
    }
}

/// Parses `key=value, key="quoted, value"` pairs; keys are lowercased.
fn parse_auth_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() && chars.peek().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_string();
            }
        }
        let key = key.trim().to_ascii_lowercase();
        if !key.is_empty() {
            out.insert(key, value);
        }
        if chars.peek().is_none() {
            break;
        }
    }
    out
}

/// The auth files looked at, in order, when the caller names none:
/// `REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json`.
pub fn default_auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(p));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(Path::new(&dir).join("containers/auth.json"));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if let Some(home) = &home {
        files.push(home.join(".config/containers/auth.json"));
    }
    files.push(docker_config_path());
    files
}

/// Where `docker login` keeps credentials: `$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`.
pub fn docker_config_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Path::new(&dir).join("config.json");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".docker/config.json")
}

/// The keys under which credentials for `registry` may be stored.
fn registry_aliases(registry: &str) -> Vec<String> {
    if registry == DOCKER_HUB {
        vec![
            "docker.io".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![registry.to_string()]
    }
}

/// Normalizes an `auths` key: drops the scheme, `/v1/`, `/v2/` and trailing slashes.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    k.to_string()
}

/// Looks credentials up for `registry` (and `repository`, for podman's
/// repository-scoped keys) in one auth file. A missing file gives `None`.
pub fn lookup_in_file(
    path: &Path,
    registry: &str,
    repository: Option<&str>,
) -> Result<Option<Credentials>, RegistryError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RegistryError::AuthFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| RegistryError::AuthFile {
            path: path.to_path_buf(),
            // serde_json errors give a position, not the content.
            reason: format!("not valid JSON: {e}"),
        })?;
    let aliases = registry_aliases(registry);

    // credHelpers: per-registry helper.
    if let Some(helpers) = config.get("credHelpers").and_then(|v| v.as_object()) {
        for alias in &aliases {
            if let Some(helper) = helpers.get(alias).and_then(|v| v.as_str()) {
                return run_credential_helper(helper, registry);
            }
        }
    }

    // auths: longest matching key (host, or host/repo prefix).
    if let Some(auths) = config.get("auths").and_then(|v| v.as_object()) {
        let mut best: Option<(usize, Credentials)> = None;
        for (key, entry) in auths {
            let key = normalize_key(key);
            let matched = aliases.iter().any(|alias| {
                key == *alias
                    || repository.is_some_and(|repo| {
                        let full = format!("{alias}/{repo}");
                        full == key || full.starts_with(&format!("{key}/"))
                    })
            });
            if !matched {
                continue;
            }
            let creds = entry
                .get("auth")
                .and_then(|v| v.as_str())
                .and_then(Credentials::from_auth_field)
                .or_else(|| {
                    let user = entry.get("username")?.as_str()?;
                    let pass = entry.get("password")?.as_str()?;
                    Some(Credentials::new(user, pass))
                })
                .or_else(|| {
                    let token = entry.get("identitytoken")?.as_str()?;
                    Some(Credentials::new("<token>", token))
                });
            if let Some(creds) = creds
                && best.as_ref().is_none_or(|(len, _)| key.len() > *len)
            {
                best = Some((key.len(), creds));
            }
        }
        if let Some((_, creds)) = best {
            return Ok(Some(creds));
        }
    }

    // credsStore: default helper for everything else.
    if let Some(store) = config.get("credsStore").and_then(|v| v.as_str())
        && !store.is_empty()
    {
        return run_credential_helper(store, registry);
    }
    Ok(None)
}

/// Runs `docker-credential-<helper> get` for `registry`.
fn run_credential_helper(
    helper: &str,
    registry: &str,
) -> Result<Option<Credentials>, RegistryError> {
    let err = |reason: String| RegistryError::CredentialHelper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        reason,
    };
    let server = if registry == DOCKER_HUB {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| err(format!("cannot write to it: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("failed: {e}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout);
        if msg.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // On failure helpers print a message, not a secret; keep one short line.
        let line: String = msg
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        return Err(err(format!("exited with {}: {line}", out.status)));
    }
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|_| err("did not print the expected JSON".into()))?;
    let user = value.get("Username").and_then(|v| v.as_str()).unwrap_or("");
    let secret = value.get("Secret").and_then(|v| v.as_str()).unwrap_or("");
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials::new(user, secret)))
}

/// Finds credentials for `registry`, looking in `auth_file` if given, else
/// in the [`default_auth_files`] in order.
pub fn find_credentials(
    registry: &str,
    repository: Option<&str>,
    auth_file: Option<&Path>,
) -> Result<Option<Credentials>, RegistryError> {
    let files = match auth_file {
        Some(f) => vec![f.to_path_buf()],
        None => default_auth_files(),
    };
    for file in files {
        if let Some(c) = lookup_in_file(&file, registry, repository)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Stores `creds` for `registry` like `docker login` does: in the `auths`
/// map of `auth_file` (default: [`docker_config_path`]) as base64
/// `user:password`, keeping everything else in the file. The file is
/// written atomically with mode 0600. Returns the file written.
pub fn login(
    registry: &str,
    creds: &Credentials,
    auth_file: Option<&Path>,
) -> Result<PathBuf, RegistryError> {
    let path = auth_file.map_or_else(docker_config_path, Path::to_path_buf);
    let file_err = |reason: String| RegistryError::AuthFile {
        path: path.clone(),
        reason,
    };
    let mut config: serde_json::Value = match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().is_empty() => serde_json::json!({}),
        Ok(text) => {
            serde_json::from_str(&text).map_err(|e| file_err(format!("not valid JSON: {e}")))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(file_err(e.to_string())),
    };
    let root = config
        .as_object_mut()
        .ok_or_else(|| file_err("top level is not a JSON object".into()))?;
    let auths = root
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or_else(|| file_err("\"auths\" is not a JSON object".into()))?;
    let key = if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    };
    auths.insert(
        key,
        serde_json::json!({
            "auth": B64.encode(format!("{}:{}", creds.username, creds.password))
        }),
    );
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| file_err(format!("cannot serialize: {e}")))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| file_err(format!("cannot create directory: {e}")))?;
    // tempfile creates the file with mode 0600.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| file_err(format!("cannot create temporary file: {e}")))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.write_all(b"\n"))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| file_err(format!("cannot write: {e}")))?;
    tmp.persist(&path)
        .map_err(|e| file_err(format!("cannot replace: {}", e.error)))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_password() {
        let c = Credentials::new("alice", "hunter2-secret");
        let dbg = format!("{c:?}");
        assert!(dbg.contains("alice"));
        assert!(!dbg.contains("hunter2"), "{dbg}");
        let dbg = format!("{:#?}", Some(c));
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }

    #[test]
    fn creds_parse_error_does_not_echo() {
        let e = "nocolon-secret".parse::<Credentials>().err();
        let msg = format!(
            "{e:?} {}",
            e.as_ref().map(|e| e.to_string()).unwrap_or_default()
        );
        assert!(!msg.contains("nocolon-secret"), "{msg}");
        let c: Credentials = "bob:pa:ss".parse().expect("valid");
        assert_eq!((c.username.as_str(), c.password()), ("bob", "pa:ss"));
    }

    #[test]
    fn parses_bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        let c = parse_challenge(r#"bearer realm=http://127.0.0.1:1/t , service="a\"b""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: Some("a\"b".into()),
                scope: None,
            })
        );
    }

    #[test]
    fn login_then_lookup_roundtrip() -> Result<(), RegistryError> {
        let dir = tempfile::tempdir().map_err(|e| RegistryError::io("tempdir", e))?;
        let path = dir.path().join("sub/config.json");
        std::fs::create_dir_all(dir.path().join("sub"))
            .map_err(|e| RegistryError::io("mkdir", e))?;
        std::fs::write(
            &path,
            r#"{"auths":{"other:1":{"auth":"eDp5"}},"psFormat":"x"}"#,
        )
        .map_err(|e| RegistryError::io("write", e))?;
        let creds = Credentials::new("u", "p@ss:word");
        login("127.0.0.1:5000", &creds, Some(&path))?;
        let found = lookup_in_file(&path, "127.0.0.1:5000", Some("a/b"))?;
        assert_eq!(found, Some(creds));
        let other = lookup_in_file(&path, "other:1", None)?;
        assert_eq!(other, Some(Credentials::new("x", "y")));
        let text = std::fs::read_to_string(&path).map_err(|e| RegistryError::io("read", e))?;
        assert!(text.contains("psFormat"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path)
                .map_err(|e| RegistryError::io("stat", e))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "auth file readable by others: {mode:o}");
        }
        Ok(())
    }

    #[test]
    fn podman_repo_scoped_and_url_keys() -> Result<(), RegistryError> {
        let dir = tempfile::tempdir().map_err(|e| RegistryError::io("tempdir", e))?;
        let path = dir.path().join("auth.json");
        let enc = |s: &str| B64.encode(s);
        let json = serde_json::json!({"auths": {
            "https://reg.example/v1/": {"auth": enc("host:1")},
            "reg.example/team": {"auth": enc("team:2")},
            "reg.example/team/app": {"auth": enc("app:3")},
        }});
        std::fs::write(&path, json.to_string()).map_err(|e| RegistryError::io("write", e))?;
        let get = |repo| -> Result<Option<String>, RegistryError> {
            Ok(lookup_in_file(&path, "reg.example", Some(repo))?.map(|c| c.username))
        };
        assert_eq!(get("team/app")?.as_deref(), Some("app"));
        assert_eq!(get("team/other")?.as_deref(), Some("team"));
        assert_eq!(get("teams")?.as_deref(), Some("host"));
        assert_eq!(lookup_in_file(&path, "nope.example", None)?, None);
        Ok(())
    }
}
