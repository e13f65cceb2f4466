//! Bearer tokens the Docker way: JWTs whose `access` claim lists repository
//! scopes (`repository:NAME:pull,push,delete`), signed by the registry's own
//! token endpoint (ES256) or by an external issuer (ES256 or RS256) whose
//! public key or certificate the operator gives.
//!
//! Verification accepts only the algorithms of the keys it holds, so a
//! token saying `alg: none`, or naming a symmetric algorithm to be checked
//! with a public key, is refused before any signature is looked at. Time is
//! passed in (no I/O here).

pub use crate::access::{Scope, SettingError as KeyError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
use serde::{Deserialize, Serialize};

/// The claims skiff issues and checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub iss: String,
    /// The user; empty for an anonymous caller's token.
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub aud: Audience,
    pub exp: u64,
    #[serde(default)]
    pub nbf: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default)]
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Scope>,
    /// The user's groups when the token was issued (from LDAP, say), so
    /// the policy sees them on every request the token makes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// `aud` is a string or a list of strings (RFC 7519).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(untagged)]
pub enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, service: &str) -> bool {
        match self {
            Audience::None => false,
            Audience::One(a) => a == service,
            Audience::Many(v) => v.iter().any(|a| a == service),
        }
    }
}

impl Claims {
    /// Does the `access` claim grant `action` (pull, push, delete, `*`) on
    /// the resource `kind:name`?
    pub fn grants(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access.iter().any(|s| s.grants(kind, name, action))
    }
}

/// Why a token was refused. Each is a 401 to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed(&'static str),
    /// The header names an algorithm none of the keys is for.
    Algorithm(String),
    Signature,
    Expired,
    NotYetValid,
    /// Issued for another service.
    Audience,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Malformed(why) => write!(f, "malformed token: {why}"),
            TokenError::Algorithm(a) => write!(f, "token algorithm {a:?} is not accepted"),
            TokenError::Signature => f.write_str("token signature does not verify"),
            TokenError::Expired => f.write_str("token has expired"),
            TokenError::NotYetValid => f.write_str("token is not valid yet"),
            TokenError::Audience => f.write_str("token was issued for another service"),
        }
    }
}

/// The token endpoint's private key (ES256: an EC P-256 key).
pub struct SigningKey(p256::ecdsa::SigningKey);

impl std::fmt::Debug for SigningKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(ES256)")
    }
}

impl SigningKey {
    /// PEM: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<SigningKey, KeyError> {
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(SigningKey(k));
        }
        p256::SecretKey::from_sec1_pem(pem)
            .map(|k| SigningKey(k.into()))
            .map_err(|_| KeyError("not a PEM EC P-256 private key (PKCS#8 or SEC1)".into()))
    }

    /// The key that verifies what this one signs.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::Es256(*self.0.verifying_key())
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let header = B64.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        // Claims are plain strings and numbers: serializing cannot fail.
        let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let input = format!("{header}.{body}");
        let sig: p256::ecdsa::Signature = self.0.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig.to_bytes()))
    }
}

/// A public key tokens are checked with.
#[derive(Debug, Clone)]
pub enum VerifyingKey {
    Es256(p256::ecdsa::VerifyingKey),
    Rs256(Box<rsa::pkcs1v15::VerifyingKey<sha2::Sha256>>),
}

impl VerifyingKey {
    fn alg(&self) -> &'static str {
        match self {
            VerifyingKey::Es256(_) => "ES256",
            VerifyingKey::Rs256(_) => "RS256",
        }
    }

    fn verify(&self, input: &[u8], sig: &[u8]) -> bool {
        match self {
            VerifyingKey::Es256(k) => p256::ecdsa::Signature::from_slice(sig)
                .map(|s| k.verify(input, &s).is_ok())
                .unwrap_or(false),
            VerifyingKey::Rs256(k) => rsa::pkcs1v15::Signature::try_from(sig)
                .map(|s| k.verify(input, &s).is_ok())
                .unwrap_or(false),
        }
    }

    fn from_spki_der(der: &[u8]) -> Result<VerifyingKey, KeyError> {
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(VerifyingKey::Es256(k));
        }
        rsa::RsaPublicKey::from_public_key_der(der)
            .map(|k| VerifyingKey::Rs256(Box::new(rsa::pkcs1v15::VerifyingKey::new(k))))
            .map_err(|_| KeyError("the public key is neither EC P-256 nor RSA".into()))
    }

    /// Every key in a PEM file: `PUBLIC KEY` blocks and `CERTIFICATE`s
    /// (the key of each certificate; its validity is the operator's
    /// business, as with zot's `bearer.cert`).
    pub fn all_from_pem(pem: &str) -> Result<Vec<VerifyingKey>, KeyError> {
        use x509_cert::der::{Decode, DecodePem, Encode};
        let mut keys = Vec::new();
        for block in pem_blocks(pem) {
            let label = block
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .trim_start_matches("-----BEGIN ")
                .trim_end_matches("-----");
            match label {
                "CERTIFICATE" => {
                    let cert = x509_cert::Certificate::from_pem(block.as_bytes())
                        .map_err(|e| KeyError(format!("certificate: {e}")))?;
                    let der = cert
                        .tbs_certificate
                        .subject_public_key_info
                        .to_der()
                        .map_err(|e| KeyError(format!("certificate key: {e}")))?;
                    keys.push(Self::from_spki_der(&der)?);
                }
                "PUBLIC KEY" => {
                    let (_, der) = x509_cert::der::pem::decode_vec(block.as_bytes())
                        .map_err(|e| KeyError(format!("public key: {e}")))?;
                    // Checks it is one well-formed SPKI before trying key types.
                    x509_cert::spki::SubjectPublicKeyInfoRef::from_der(&der)
                        .map_err(|e| KeyError(format!("public key: {e}")))?;
                    keys.push(Self::from_spki_der(&der)?);
                }
                // A private key next to the public one is not used here.
                _ => {}
            }
        }
        if keys.is_empty() {
            return Err(KeyError(
                "no PUBLIC KEY or CERTIFICATE block in the PEM".into(),
            ));
        }
        Ok(keys)
    }
}

fn pem_blocks(pem: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in pem.lines() {
        let t = line.trim();
        if t.starts_with("-----BEGIN ") {
            cur = Some(String::new());
        }
        if let Some(b) = cur.as_mut() {
            b.push_str(t);
            b.push('\n');
        }
        if t.starts_with("-----END ") {
            blocks.extend(cur.take());
        }
    }
    blocks
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// How much clock difference between issuer and registry is tolerated.
pub const LEEWAY_SECS: u64 = 30;

/// Check `token` against `keys` for `service` at `now` (seconds since the
/// epoch) and return its claims.
pub fn verify(
    keys: &[VerifyingKey],
    token: &str,
    service: &str,
    now: u64,
) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(b), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let decode =
        |p: &str, what: &'static str| B64.decode(p).map_err(|_| TokenError::Malformed(what));
    let header: Header = serde_json::from_slice(&decode(h, "header is not base64url")?)
        .map_err(|_| TokenError::Malformed("header is not a JWT header"))?;
    let candidates: Vec<&VerifyingKey> = keys.iter().filter(|k| k.alg() == header.alg).collect();
    if candidates.is_empty() {
        return Err(TokenError::Algorithm(header.alg));
    }
    let sig = decode(s, "signature is not base64url")?;
    let input = &token[..h.len() + 1 + b.len()];
    if !candidates.iter().any(|k| k.verify(input.as_bytes(), &sig)) {
        return Err(TokenError::Signature);
    }
    let claims: Claims = serde_json::from_slice(&decode(b, "claims are not base64url")?)
        .map_err(|_| TokenError::Malformed("claims are not the expected JSON"))?;
    if now >= claims.exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    if claims.nbf > now.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::NotYetValid);
    }
    if !claims.aud.contains(service) {
        return Err(TokenError::Audience);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A P-256 key made for these tests only.
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgK/mgvJlaWSOt3kPt
2AV0iDRD2Lb0KUq+p+M/fZm0KVihRANCAASWejocVAw0K8jFMJjBZcw+R+qQ5yx1
JNEtZD1dM4oblcNYN6enRczxAht2Z/fSa/Qgi2Ok/FGq2aCZGoXj7NCk
-----END PRIVATE KEY-----
";

    fn claims(now: u64) -> Claims {
        Claims {
            iss: "skiff".into(),
            sub: "alice".into(),
            aud: Audience::One("registry".into()),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: "1".into(),
            access: vec![Scope::repository("team/app", &["pull", "push"])],
            groups: vec![],
        }
    }

    #[test]
    fn a_signed_token_verifies_and_grants_its_scopes() {
        let k = SigningKey::from_pem(KEY).unwrap();
        let t = k.sign(&claims(1000));
        let c = verify(&[k.verifying_key()], &t, "registry", 1100).unwrap();
        assert_eq!(c.sub, "alice");
        assert!(c.grants("repository", "team/app", "push"));
        assert!(!c.grants("repository", "team/app", "delete"));
        assert!(!c.grants("repository", "team/other", "pull"));
    }

    #[test]
    fn expiry_audience_and_tampering_are_refused() {
        let k = SigningKey::from_pem(KEY).unwrap();
        let keys = [k.verifying_key()];
        let t = k.sign(&claims(1000));
        assert_eq!(
            verify(&keys, &t, "registry", 2000),
            Err(TokenError::Expired)
        );
        assert_eq!(verify(&keys, &t, "other", 1100), Err(TokenError::Audience));
        // Another user's name in the same signature.
        let (h, rest) = t.split_once('.').unwrap();
        let (_, s) = rest.split_once('.').unwrap();
        let mut c = claims(1000);
        c.sub = "root".into();
        let forged = format!("{h}.{}.{s}", B64.encode(serde_json::to_vec(&c).unwrap()));
        assert_eq!(
            verify(&keys, &forged, "registry", 1100),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn alg_none_and_hs256_are_refused() {
        let k = SigningKey::from_pem(KEY).unwrap();
        let keys = [k.verifying_key()];
        let body = B64.encode(serde_json::to_vec(&claims(1000)).unwrap());
        for alg in ["none", "HS256"] {
            let h = B64.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let t = format!("{h}.{body}.");
            assert_eq!(
                verify(&keys, &t, "registry", 1100),
                Err(TokenError::Algorithm(alg.into()))
            );
        }
    }
}
