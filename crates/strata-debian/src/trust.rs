//! OpenPGP keyrings and the verification of `InRelease` / `Release.gpg` signatures.

use std::path::Path;

use pgp::composed::{
    CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey, SignedPublicSubKey,
};
use pgp::packet::{PublicKey, Signature, SignatureType};
use pgp::types::{KeyDetails, Tag};

use crate::DebianError;

/// Debian's archive signing keys, shipped inside the binary.
const DEBIAN_KEYRING: &[u8] = include_bytes!("../keys/debian-archive-keyring.gpg");

/// A set of trusted OpenPGP certificates.
#[derive(Debug, Clone)]
pub struct Keyring {
    certs: Vec<SignedPublicKey>,
    origin: String,
}

/// A signing key found valid at verification time.
struct SigningKey<'a> {
    key: KeyRef<'a>,
    fingerprint: String,
    created: u32,
    expires: Option<u64>,
}

enum KeyRef<'a> {
    Primary(&'a PublicKey),
    Sub(&'a SignedPublicSubKey),
}

impl Keyring {
    /// Debian's archive keys (bullseye, bookworm, trixie), embedded in the binary.
    pub fn debian() -> Result<Self, DebianError> {
        Self::from_bytes(DEBIAN_KEYRING, "built-in Debian archive keyring")
    }

    /// Reads a keyring file (binary or ASCII-armoured, one or more certificates) or, for a
    /// directory, every `*.gpg` and `*.asc` file in it.
    pub fn load(path: &Path) -> Result<Self, DebianError> {
        let err = |message: String| DebianError::Keyring {
            origin: path.display().to_string(),
            message,
        };
        if path.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| err(e.to_string()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "gpg" || e == "asc"))
                .collect();
            names.sort();
            let mut certs = Vec::new();
            for p in names {
                certs.extend(Self::load(&p)?.certs);
            }
            if certs.is_empty() {
                return Err(err("no keys found".into()));
            }
            return Ok(Self {
                certs,
                origin: path.display().to_string(),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses certificates from bytes (binary or ASCII-armoured).
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, DebianError> {
        let err = |message: String| DebianError::Keyring {
            origin: origin.to_owned(),
            message,
        };
        let mut certs = Vec::new();
        let armored = bytes.starts_with(b"-----BEGIN");
        if armored {
            // Possibly several armoured blocks one after another.
            let text = String::from_utf8_lossy(bytes);
            for block in text.split("-----BEGIN").filter(|b| !b.trim().is_empty()) {
                let block = format!("-----BEGIN{block}");
                let (iter, _) = SignedPublicKey::from_armor_many(block.as_bytes())
                    .map_err(|e| err(e.to_string()))?;
                for c in iter {
                    certs.push(c.map_err(|e| err(e.to_string()))?);
                }
            }
        } else {
            let iter = SignedPublicKey::from_bytes_many(bytes).map_err(|e| err(e.to_string()))?;
            for c in iter {
                certs.push(c.map_err(|e| err(e.to_string()))?);
            }
        }
        if certs.is_empty() {
            return Err(err("no keys found".into()));
        }
        Ok(Self {
            certs,
            origin: origin.to_owned(),
        })
    }

    /// Fingerprints (upper-case hex) of the primary keys.
    pub fn fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| fingerprint_hex(&c.primary_key))
            .collect()
    }

    /// Where the keyring came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Verifies a cleartext-signed `InRelease` and returns its signed text (with `\n` line
    /// endings) and the fingerprint of the key of the first good signature. `now` is seconds
    /// since the epoch, used for key expiry.
    pub fn verify_cleartext(
        &self,
        file: &str,
        armored: &[u8],
        now: u64,
    ) -> Result<(String, String), DebianError> {
        let text = std::str::from_utf8(armored).map_err(|_| DebianError::Signature {
            file: file.to_owned(),
            reason: "not UTF-8 text".into(),
        })?;
        let (msg, _) =
            CleartextSignedMessage::from_string(text).map_err(|e| DebianError::Signature {
                file: file.to_owned(),
                reason: format!("not an OpenPGP cleartext-signed message: {e}"),
            })?;
        let signed = msg.signed_text();
        let fpr = self.verify_any(file, msg.signatures(), signed.as_bytes(), now)?;
        Ok((signed.replace("\r\n", "\n"), fpr))
    }

    /// Verifies a detached signature (`Release.gpg`) over `data`; returns the fingerprint of
    /// the key of the first good signature.
    pub fn verify_detached(
        &self,
        file: &str,
        data: &[u8],
        signature: &[u8],
        now: u64,
    ) -> Result<String, DebianError> {
        let bad = |reason: String| DebianError::Signature {
            file: file.to_owned(),
            reason,
        };
        let sigs: Vec<Signature> = if signature.starts_with(b"-----BEGIN") {
            let (iter, _) = DetachedSignature::from_armor_many(signature)
                .map_err(|e| bad(format!("unreadable signature: {e}")))?;
            iter.map(|s| s.map(|s| s.signature))
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("unreadable signature: {e}")))?
        } else {
            DetachedSignature::from_bytes_many(signature)
                .map_err(|e| bad(format!("unreadable signature: {e}")))?
                .map(|s| s.map(|s| s.signature))
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("unreadable signature: {e}")))?
        };
        self.verify_any(file, &sigs, data, now)
    }

    fn verify_any(
        &self,
        file: &str,
        sigs: &[Signature],
        data: &[u8],
        now: u64,
    ) -> Result<String, DebianError> {
        let mut reasons = Vec::new();
        if sigs.is_empty() {
            reasons.push("no signature".to_owned());
        }
        for sig in sigs {
            match self.verify_one(sig, data, now) {
                Ok(fpr) => return Ok(fpr),
                Err(r) => reasons.push(r),
            }
        }
        Err(DebianError::Signature {
            file: file.to_owned(),
            reason: format!(
                "no good signature from a key in {}: {}",
                self.origin,
                reasons.join("; ")
            ),
        })
    }

    fn verify_one(&self, sig: &Signature, data: &[u8], now: u64) -> Result<String, String> {
        let issuers: Vec<String> = sig
            .issuer_fingerprint()
            .iter()
            .map(|f| hex::encode_upper(f.as_bytes()))
            .chain(
                sig.issuer_key_id()
                    .iter()
                    .map(|k| hex::encode_upper(k.as_ref())),
            )
            .collect();
        let issuer_text = issuers.first().cloned().unwrap_or_else(|| "?".into());
        let matches = |fpr: &str| {
            issuers.iter().any(|i| {
                fpr.eq_ignore_ascii_case(i) || fpr.to_uppercase().ends_with(&i.to_uppercase())
            })
        };
        let sig_created = sig.created().map(|t| t.as_secs()).unwrap_or(0);
        let mut found = false;
        let mut last_err = String::new();
        for cert in &self.certs {
            for key in signing_keys(cert) {
                if !matches(&key.fingerprint) {
                    continue;
                }
                found = true;
                if let Some(exp) = key.expires
                    && exp <= now
                {
                    last_err = format!("key {} expired at {}", key.fingerprint, exp);
                    continue;
                }
                if sig_created < key.created {
                    last_err = format!("signature by {} predates its key", key.fingerprint);
                    continue;
                }
                if let Some(sexp) = sig.signature_expiration_time()
                    && sexp.as_secs() > 0
                    && u64::from(sig_created) + u64::from(sexp.as_secs()) <= now
                {
                    last_err = format!("signature by {} has expired", key.fingerprint);
                    continue;
                }
                let res = match key.key {
                    KeyRef::Primary(k) => sig.verify(k, data),
                    KeyRef::Sub(k) => sig.verify(&k.key, data),
                };
                match res {
                    Ok(()) => return Ok(key.fingerprint),
                    Err(e) => last_err = format!("bad signature by {}: {e}", key.fingerprint),
                }
            }
        }
        if !found {
            return Err(format!("signature by unknown key {issuer_text}"));
        }
        Err(last_err)
    }
}

fn fingerprint_hex(k: &impl KeyDetails) -> String {
    hex::encode_upper(k.fingerprint().as_bytes())
}

/// The keys of a certificate usable for signing, with their validity, or nothing for a
/// revoked certificate. Self-signatures are verified; only the newest valid one counts.
fn signing_keys(cert: &SignedPublicKey) -> Vec<SigningKey<'_>> {
    let primary = &cert.primary_key;
    let mut out = Vec::new();
    // Revoked primary key: nothing is valid.
    if cert
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(primary).is_ok())
    {
        return out;
    }
    // Newest valid self-signature on the primary (user-id certification or direct key sig).
    let mut newest: Option<&Signature> = None;
    let consider = |s: &'_ Signature| s.created().map(|t| t.as_secs()).unwrap_or(0);
    for user in &cert.details.users {
        for s in &user.signatures {
            if s.typ() == Some(SignatureType::CertRevocation) {
                continue;
            }
            if s.verify_certification(primary, Tag::UserId, &user.id)
                .is_ok()
                && newest.is_none_or(|n| consider(s) >= consider(n))
            {
                newest = Some(s);
            }
        }
    }
    for s in &cert.details.direct_signatures {
        if s.verify_key(primary).is_ok() && newest.is_none_or(|n| consider(s) >= consider(n)) {
            newest = Some(s);
        }
    }
    let Some(self_sig) = newest else {
        return out;
    };
    let created = primary.created_at().as_secs();
    let primary_expires = expiry(created, self_sig);
    let flags = self_sig.key_flags();
    let no_flags = !flags.sign() && !flags.certify() && !flags.encrypt_comms();
    if flags.sign() || no_flags {
        out.push(SigningKey {
            key: KeyRef::Primary(primary),
            fingerprint: fingerprint_hex(primary),
            created,
            expires: primary_expires,
        });
    }
    for sub in &cert.public_subkeys {
        let revoked = sub.signatures.iter().any(|s| {
            s.typ() == Some(SignatureType::SubkeyRevocation)
                && s.verify_subkey_binding(primary, &sub.key).is_ok()
        });
        if revoked {
            continue;
        }
        let mut best: Option<&Signature> = None;
        for s in &sub.signatures {
            if s.typ() != Some(SignatureType::SubkeyBinding)
                || s.verify_subkey_binding(primary, &sub.key).is_err()
                || !s.key_flags().sign()
            {
                continue;
            }
            // A signing subkey must carry a valid back-signature.
            let backsig_ok = s
                .embedded_signature()
                .is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok());
            if backsig_ok && best.is_none_or(|n| consider(s) >= consider(n)) {
                best = Some(s);
            }
        }
        if let Some(binding) = best {
            let sub_created = sub.key.created_at().as_secs();
            let sub_exp = expiry(sub_created, binding);
            let expires = match (sub_exp, primary_expires) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            out.push(SigningKey {
                key: KeyRef::Sub(sub),
                fingerprint: fingerprint_hex(&sub.key),
                created: sub_created,
                expires,
            });
        }
    }
    out
}

fn expiry(created: u32, sig: &Signature) -> Option<u64> {
    sig.key_expiration_time()
        .filter(|d| d.as_secs() > 0)
        .map(|d| u64::from(created) + u64::from(d.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_keyring_parses() {
        let k = Keyring::debian().expect("keyring");
        let fprs = k.fingerprints();
        // Debian Stable Release Key (12/bookworm), ed25519.
        assert!(fprs.contains(&"4D64FEC119C2029067D6E791F8D2585B8783D481".to_string()));
        // Archive automatic signing key (12/bookworm), RSA 4096 with a signing subkey.
        assert!(fprs.contains(&"B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8".to_string()));
        let mut signing = 0;
        for c in &k.certs {
            signing += signing_keys(c).len();
        }
        assert!(signing >= 9, "found {signing} signing keys");
    }
}
