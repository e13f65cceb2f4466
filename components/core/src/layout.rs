//! The OCI image layout's `index.json`, where a repository's manifests and
//! tags live. Fields skiff does not know (platform, urls, data, extra
//! annotations) are kept as they are, so a layout made by another tool stays
//! intact when skiff rewrites its index.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The annotation that names a tag in a layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Contents of a repository's `oci-layout` file.
pub const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: &str, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            artifact_type: None,
            annotations: BTreeMap::new(),
            extra: Map::new(),
        }
    }

    pub fn tag(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }

    /// When skiff recorded this entry's push (milliseconds since the epoch);
    /// `None` for entries written by other tools.
    pub fn pushed_at_ms(&self) -> Option<u64> {
        self.annotations.get(PUSHED_AT)?.parse().ok()
    }
}

/// The annotation in which skiff records, on each `index.json` entry, when
/// the manifest (and so the tag) was pushed. Retention ranks tags by it: a
/// file's modification time is shared by every repository a deduped blob is
/// linked into, and an image's own `created` annotation says when it was
/// built, not pushed here.
pub const PUSHED_AT: &str = "dev.skiff.pushed-at";

/// Annotations of the index itself, one per tag entry it has absorbed
/// (`dev.skiff.folded.<tag>`: the entry's version), so that a writer
/// holding an entry read before it was folded and then superseded (the
/// tag deleted, say) does not fold it in again.
pub const FOLDED_PREFIX: &str = "dev.skiff.folded.";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for ImageIndex {
    fn default() -> Self {
        ImageIndex {
            schema_version: 2,
            media_type: Some(crate::manifest::OCI_INDEX.to_string()),
            manifests: Vec::new(),
            extra: Map::new(),
        }
    }
}

impl ImageIndex {
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.manifests.iter().filter_map(Descriptor::tag)
    }

    pub fn by_tag(&self, tag: &str) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| d.tag() == Some(tag))
    }

    pub fn by_digest(&self, digest: &str) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| d.digest == digest)
    }

    /// Point `tag` at `desc`, moving it off whatever it named before. The
    /// manifest it named stays in the index, untagged, so it remains
    /// reachable by digest until garbage collection decides otherwise.
    pub fn set_tag(&mut self, tag: &str, desc: &Descriptor) {
        self.remove_tag(tag);
        // Reuse an untagged entry of the same manifest rather than add a second.
        self.manifests
            .retain(|d| !(d.digest == desc.digest && d.tag().is_none()));
        let mut tagged = desc.clone();
        tagged
            .annotations
            .insert(REF_NAME.to_string(), tag.to_string());
        self.manifests.push(tagged);
    }

    /// Record a manifest pushed by digest, unless the index already has it;
    /// whether it was added.
    pub fn add_untagged(&mut self, desc: &Descriptor) -> bool {
        if self.by_digest(&desc.digest).is_some() {
            return false;
        }
        let mut d = desc.clone();
        d.annotations.remove(REF_NAME);
        self.manifests.push(d);
        true
    }

    /// Remove one tag; the manifest stays, untagged, if nothing else names it.
    pub fn remove_tag(&mut self, tag: &str) -> bool {
        let Some(pos) = self.manifests.iter().position(|d| d.tag() == Some(tag)) else {
            return false;
        };
        let mut old = self.manifests.remove(pos);
        if self.by_digest(&old.digest).is_none() {
            old.annotations.remove(REF_NAME);
            self.manifests.push(old);
        }
        true
    }

    /// `set_tag` for each of `tags` (of a tag named twice, only the last) in
    /// one pass over the index, rather than one pass per tag: folding
    /// hundreds of tags into an index of 100k must not cost hundreds of
    /// scans. Every entry naming one of the tags goes (layouts made
    /// elsewhere may name a tag twice); a manifest left with no entry stays,
    /// untagged. Whether the index changed: folding tags it already holds
    /// (a fold repeated by a writer that lost the race to store it) leaves
    /// it as it was.
    pub fn set_tags(&mut self, tags: &[(String, Descriptor)]) -> bool {
        if tags.is_empty() {
            return false;
        }
        let wanted: BTreeMap<&str, &Descriptor> =
            tags.iter().map(|(t, d)| (t.as_str(), d)).collect();
        let incoming: BTreeSet<&str> = wanted.values().map(|d| d.digest.as_str()).collect();
        if self.holds(&wanted, &incoming) {
            return false;
        }
        let mut untagged_now = Vec::new();
        self.manifests.retain(|d| match d.tag() {
            Some(t) if wanted.contains_key(t) => {
                untagged_now.push(d.clone());
                false
            }
            None => !incoming.contains(d.digest.as_str()),
            Some(_) => true,
        });
        for (tag, desc) in &wanted {
            let mut tagged = (*desc).clone();
            tagged
                .annotations
                .insert(REF_NAME.to_string(), tag.to_string());
            self.manifests.push(tagged);
        }
        let mut listed: BTreeSet<String> =
            self.manifests.iter().map(|d| d.digest.clone()).collect();
        for mut old in untagged_now {
            if listed.insert(old.digest.clone()) {
                old.annotations.remove(REF_NAME);
                self.manifests.push(old);
            }
        }
        true
    }

    /// Whether every tag of `wanted` is named by exactly one entry, equal to
    /// what setting it would write, and no untagged entry would be merged.
    fn holds(&self, wanted: &BTreeMap<&str, &Descriptor>, incoming: &BTreeSet<&str>) -> bool {
        let mut matching: BTreeMap<&str, usize> = BTreeMap::new();
        for d in &self.manifests {
            match d.tag() {
                Some(t) => {
                    let Some(w) = wanted.get(t) else { continue };
                    let same = d.digest == w.digest
                        && d.media_type == w.media_type
                        && d.size == w.size
                        && d.artifact_type == w.artifact_type
                        && d.extra == w.extra
                        && d.annotations.len() == w.annotations.len() + 1
                        && w.annotations
                            .iter()
                            .all(|(k, v)| d.annotations.get(k) == Some(v));
                    if !same {
                        return false;
                    }
                    *matching.entry(t).or_default() += 1;
                }
                None if incoming.contains(d.digest.as_str()) => return false,
                None => {}
            }
        }
        matching.len() == wanted.len() && matching.values().all(|&n| n == 1)
    }

    /// The version of `tag`'s entry (kept beside the index until it is
    /// folded in) that this index has absorbed, if it records one.
    pub fn folded(&self, tag: &str) -> Option<&str> {
        self.extra
            .get("annotations")?
            .get(format!("{FOLDED_PREFIX}{tag}"))?
            .as_str()
    }

    /// Every absorbed entry this index records: tag and version.
    pub fn folded_entries(&self) -> Vec<(String, String)> {
        let Some(Value::Object(a)) = self.extra.get("annotations") else {
            return Vec::new();
        };
        a.iter()
            .filter_map(|(k, v)| {
                Some((
                    k.strip_prefix(FOLDED_PREFIX)?.to_string(),
                    v.as_str()?.to_string(),
                ))
            })
            .collect()
    }

    /// Record (`Some`) or forget (`None`) that `tag`'s entry at `version`
    /// is absorbed.
    pub fn set_folded(&mut self, tag: &str, version: Option<&str>) {
        let key = format!("{FOLDED_PREFIX}{tag}");
        let annotations = self
            .extra
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        let Value::Object(a) = annotations else {
            return;
        };
        match version {
            Some(v) => {
                a.insert(key, Value::String(v.to_string()));
            }
            None => {
                a.remove(&key);
            }
        }
        if a.is_empty() {
            self.extra.remove("annotations");
        }
    }

    /// Remove a manifest and every tag on it.
    pub fn remove_digest(&mut self, digest: &str) -> bool {
        let before = self.manifests.len();
        self.manifests.retain(|d| d.digest != digest);
        self.manifests.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(d: &str) -> Descriptor {
        Descriptor::new(crate::manifest::OCI_MANIFEST, d, 10)
    }

    #[test]
    fn tagging_and_untagging() {
        let mut idx = ImageIndex::default();
        idx.add_untagged(&desc("sha256:a"));
        idx.set_tag("v1", &desc("sha256:a"));
        assert_eq!(idx.manifests.len(), 1, "untagged entry reused");
        idx.set_tag("latest", &desc("sha256:a"));
        assert_eq!(idx.tags().collect::<Vec<_>>(), ["v1", "latest"]);
        // Moving a tag keeps the old manifest reachable.
        idx.set_tag("v1", &desc("sha256:b"));
        assert_eq!(idx.by_tag("v1").unwrap().digest, "sha256:b");
        assert!(idx.by_digest("sha256:a").is_some());
        assert!(idx.remove_tag("latest"));
        assert!(idx.by_digest("sha256:a").is_some(), "untagged but kept");
        assert!(idx.by_tag("latest").is_none());
        assert!(!idx.remove_tag("latest"));
        assert!(idx.remove_digest("sha256:b"));
        assert!(idx.by_tag("v1").is_none());
    }

    #[test]
    fn setting_tags_at_once_ends_where_one_at_a_time_does() {
        let mut start = ImageIndex::default();
        start.add_untagged(&desc("sha256:u"));
        start.set_tag("v1", &desc("sha256:a"));
        start.set_tag("v2", &desc("sha256:a"));
        start.set_tag("old", &desc("sha256:o"));
        start.set_tag("keep", &desc("sha256:k"));
        let moves: Vec<(String, Descriptor)> =
            [("v1", "sha256:b"), ("old", "sha256:u"), ("new", "sha256:o")]
                .iter()
                .map(|(t, d)| (t.to_string(), desc(d)))
                .collect();
        let mut one_by_one = start.clone();
        for (t, d) in &moves {
            one_by_one.set_tag(t, d);
        }
        let mut at_once = start.clone();
        assert!(at_once.set_tags(&moves));
        let view = |i: &ImageIndex| {
            let mut v: Vec<(Option<String>, String)> = i
                .manifests
                .iter()
                .map(|d| (d.tag().map(str::to_string), d.digest.clone()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(view(&at_once), view(&one_by_one));
        assert!(!at_once.set_tags(&[]));
        // Setting them again changes nothing, and says so.
        let again = at_once.clone();
        assert!(!at_once.set_tags(&moves));
        assert_eq!(at_once, again);
        let moved = [("keep".to_string(), desc("sha256:a"))];
        assert!(at_once.set_tags(&moved));
    }

    #[test]
    fn keeps_unknown_fields() {
        let json = r#"{"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"sha256:a","size":1,
            "platform":{"os":"linux","architecture":"amd64"},
            "annotations":{"org.opencontainers.image.ref.name":"t","x":"y"}}],"annotations":{"k":"v"}}"#;
        let idx: ImageIndex = serde_json::from_str(json).unwrap();
        let back: serde_json::Value = serde_json::to_value(&idx).unwrap();
        assert_eq!(back["manifests"][0]["platform"]["os"], "linux");
        assert_eq!(back["manifests"][0]["annotations"]["x"], "y");
        assert_eq!(back["annotations"]["k"], "v");
        assert_eq!(idx.tags().collect::<Vec<_>>(), ["t"]);
    }
}
