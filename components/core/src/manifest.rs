//! Manifests as pushed: which kind, what they reference, what they say about
//! themselves. Parsing never rewrites the bytes; the stored manifest is the
//! pushed one, byte for byte.

use crate::digest::Digest;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest accepted, as the spec suggests (4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image manifest (OCI or Docker v2 schema 2): config and layers.
    Image,
    /// An index (OCI image index or Docker manifest list): other manifests.
    Index,
}

pub fn kind_of_media_type(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(Kind::Index),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError(pub String);

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One descriptor a manifest refers through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub digest: Digest,
    pub size: u64,
    pub media_type: Option<String>,
    /// The descriptor names `urls` to fetch it from elsewhere (a
    /// non-distributable layer, such as a Windows base layer): the
    /// repository need not hold it.
    pub external: bool,
}

/// What a pushed manifest is and refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub media_type: String,
    pub kind: Kind,
    /// Config and layers of an image manifest (must exist in the repository,
    /// with the size they are given, unless `external`).
    pub blobs: Vec<Ref>,
    /// Manifests an index lists.
    pub children: Vec<Ref>,
    pub subject: Option<Digest>,
    /// `artifactType`, or for an image manifest without one its config's media type,
    /// as the referrers API reports it.
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    size: i64,
    #[serde(default)]
    urls: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn descriptor_ref(d: &RawDescriptor, what: &str) -> Result<Ref, ManifestError> {
    let size =
        u64::try_from(d.size).map_err(|_| ManifestError(format!("{what} has a negative size")))?;
    let digest = d
        .digest
        .parse()
        .map_err(|e| ManifestError(format!("{what}: {e}")))?;
    Ok(Ref {
        digest,
        size,
        media_type: d.media_type.clone(),
        external: !d.urls.is_empty(),
    })
}

/// Parse a manifest pushed with `content_type` (the request's `Content-Type`).
///
/// The media type is the body's `mediaType` when it has one (the header must
/// then agree), else the header's; a manifest of neither known kind is refused.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| ManifestError(format!("not a manifest: {e}")))?;
    if raw.schema_version != Some(2) {
        return Err(ManifestError("schemaVersion must be 2".into()));
    }
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| !c.is_empty());
    let media_type = match (&raw.media_type, header) {
        (Some(body), Some(h)) if body != h => {
            return Err(ManifestError(format!(
                "Content-Type {h} differs from the manifest's mediaType {body}"
            )))
        }
        (Some(body), _) => body.clone(),
        (None, Some(h)) => h.to_string(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    let kind = kind_of_media_type(&media_type)
        .ok_or_else(|| ManifestError(format!("unsupported manifest media type {media_type}")))?;

    let subject = raw
        .subject
        .as_ref()
        .map(|s| descriptor_ref(s, "subject").map(|r| r.digest))
        .transpose()?;
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let mut artifact_type = raw.artifact_type.clone();
    match kind {
        Kind::Image => {
            let config = raw
                .config
                .as_ref()
                .ok_or_else(|| ManifestError("image manifest without config".into()))?;
            blobs.push(descriptor_ref(config, "config")?);
            if artifact_type.is_none() {
                artifact_type = config.media_type.clone();
            }
            let layers = raw
                .layers
                .as_ref()
                .ok_or_else(|| ManifestError("image manifest without layers".into()))?;
            for l in layers {
                blobs.push(descriptor_ref(l, "layer")?);
            }
        }
        Kind::Index => {
            let manifests = raw
                .manifests
                .as_ref()
                .ok_or_else(|| ManifestError("index without manifests".into()))?;
            for m in manifests {
                children.push(descriptor_ref(m, "manifest")?);
            }
        }
    }
    Ok(Manifest {
        media_type,
        kind,
        blobs,
        children,
        subject,
        artifact_type,
        annotations: raw.annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const D2: &str = "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":1}}]{extra}}}"#
        )
    }

    #[test]
    fn image_manifest() {
        let m = parse(image("").as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert!(m.subject.is_none());
    }

    #[test]
    fn subject_and_artifact_type() {
        let extra = format!(
            r#","artifactType":"application/x-sig","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":3}},"annotations":{{"a":"b"}}"#
        );
        let m = parse(image(&extra).as_bytes(), None).unwrap();
        assert_eq!(m.subject.unwrap().to_string(), D2);
        assert_eq!(m.artifact_type.as_deref(), Some("application/x-sig"));
        assert_eq!(m.annotations["a"], "b");
    }

    #[test]
    fn the_recorded_media_type_decides_the_kind() {
        // An image manifest without mediaType but with a stray `manifests`
        // field: the header it was pushed with says what it is.
        let body =
            image(r#","manifests":[]"#).replace(&format!(r#""mediaType":"{OCI_MANIFEST}","#), "");
        let m = parse(body.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, Kind::Image);
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(m.blobs[1].size, 1);
        assert!(!m.blobs[1].external);
    }

    #[test]
    fn external_layers() {
        let body = image("").replace(
            r#""size":1}"#,
            r#""size":1,"urls":["https://example.com/layer"]}"#,
        );
        let m = parse(body.as_bytes(), None).unwrap();
        assert!(m.blobs[1].external);
        assert!(!m.blobs[0].external);
    }

    #[test]
    fn index() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":5}}]}}"#
        );
        let m = parse(body.as_bytes(), Some(OCI_INDEX)).unwrap();
        assert_eq!(m.kind, Kind::Index);
        assert_eq!(m.children.len(), 1);
        // No mediaType anywhere: the shape decides.
        assert_eq!(parse(body.as_bytes(), None).unwrap().media_type, OCI_INDEX);
    }

    #[test]
    fn docker_schema2_accepted() {
        let body = image("").replace(OCI_MANIFEST, DOCKER_MANIFEST);
        let m = parse(body.as_bytes(), Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST);
    }

    #[test]
    fn rejects_invalid() {
        assert!(parse(b"not json", None).is_err());
        assert!(parse(b"{}", None).is_err());
        assert!(parse(br#"{"schemaVersion":1}"#, None).is_err());
        // Header and body disagree.
        assert!(parse(image("").as_bytes(), Some(OCI_INDEX)).is_err());
        // Bad digest in a layer.
        let bad = image("").replace(D2, "sha256:nothex");
        assert!(parse(bad.as_bytes(), None).is_err());
        // Negative size.
        let neg = image("").replace(r#""size":1"#, r#""size":-1"#);
        assert!(parse(neg.as_bytes(), None).is_err());
    }

    #[test]
    fn rejects_unknown_media_type() {
        const UNKNOWN: &str = "application/vnd.example.unknown+json";
        let assert_refused_for_media_type = |body: &str, header: Option<&str>| {
            let err = parse(body.as_bytes(), header)
                .expect_err("a manifest of an unknown media type must be refused");
            assert_eq!(
                err.0,
                format!("unsupported manifest media type {UNKNOWN}"),
                "refused for another reason: {body}"
            );
        };
        // The complete image manifest that `image_manifest` parses, its
        // mediaType (in the body, then in the header alone) the one change.
        let known = image("");
        assert!(parse(known.as_bytes(), Some(OCI_MANIFEST)).is_ok());
        let in_body = known.replace(OCI_MANIFEST, UNKNOWN);
        assert_ne!(in_body, known);
        assert_refused_for_media_type(&in_body, None);
        assert_refused_for_media_type(&in_body, Some(UNKNOWN));
        let no_media_type = known.replace(&format!(r#""mediaType":"{OCI_MANIFEST}","#), "");
        assert!(!no_media_type.contains(OCI_MANIFEST));
        assert!(parse(no_media_type.as_bytes(), Some(OCI_MANIFEST)).is_ok());
        assert_refused_for_media_type(&no_media_type, Some(UNKNOWN));
        // A parameter on the header does not hide the type.
        assert_refused_for_media_type(&no_media_type, Some(&format!("{UNKNOWN}; charset=utf-8")));
    }
}
