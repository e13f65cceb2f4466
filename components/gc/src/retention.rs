//! zot's tag retention: which tags a `keep-tags` policy lets go.
//!
//! Push times come from the repository's own metadata (the `index.json`
//! entry skiff stamps at push), never from a blob's modification time, which
//! every repository sharing a deduped blob changes; pull times from the pull
//! markers the storage component keeps.

use crate::bindings::exports::skiff::registry::gc::{KeepTags, Policy};
use skiff_core::layout::{Descriptor, ImageIndex};
use skiff_core::Digest;
use skiff_layout::{keys, stat, LayoutError};

/// One tag and when it was pushed and last pulled.
struct TagTimes {
    tag: String,
    digest: String,
    pushed: u64,
    pulled: Option<u64>,
    /// `manifest_age`: what the delays compare with.
    age: u64,
}

/// When the entry was pushed: its stamp, or for entries other tools wrote,
/// the manifest blob's modification time.
fn pushed_at(repo: &str, d: &Descriptor, digest: &Digest) -> Result<Option<u64>, LayoutError> {
    match d.pushed_at_ms() {
        Some(t) => Ok(Some(t)),
        None => Ok(stat(&keys::blob(repo, digest))?.map(|m| m.modified_ms)),
    }
}

/// Age of a manifest by its blob's last touch (a push, a re-push or a
/// promotion touches it); `None` if the blob is gone. The delays compare
/// with this: whatever touched the manifest recently is protected, which
/// errs on the side of keeping.
pub fn manifest_age(repo: &str, digest: &Digest, now: u64) -> Result<Option<u64>, LayoutError> {
    Ok(stat(&keys::blob(repo, digest))?.map(|m| now.saturating_sub(m.modified_ms)))
}

/// (tag, digest) pairs to remove: tags no rule keeps, older than the delays.
pub fn doomed_tags(
    repo: &str,
    idx: &ImageIndex,
    policy: &Policy,
    now: u64,
) -> Result<Vec<(String, String)>, LayoutError> {
    let Some(rules) = &policy.keep_tags else {
        return Ok(Vec::new());
    };
    let mut tags: Vec<TagTimes> = Vec::new();
    for d in &idx.manifests {
        let (Some(tag), Ok(digest)) = (d.tag(), d.digest.parse::<Digest>()) else {
            continue;
        };
        let pushed = pushed_at(repo, d, &digest)?.unwrap_or(0);
        let pulled = stat(&keys::pulled(repo, &digest))?.map(|m| m.modified_ms);
        let age = manifest_age(repo, &digest, now)?.unwrap_or(u64::MAX);
        tags.push(TagTimes {
            tag: tag.to_string(),
            digest: d.digest.clone(),
            pushed,
            pulled,
            age,
        });
    }
    let mut kept = vec![false; tags.len()];
    for rule in rules {
        for i in kept_by(rule, &tags, now) {
            kept[i] = true;
        }
    }
    let delay = policy.delay_ms.max(policy.retention_delay_ms);
    Ok(tags
        .into_iter()
        .zip(kept)
        .filter(|(t, keep)| !keep && t.age >= delay)
        .map(|(t, _)| (t.tag, t.digest))
        .collect())
}

/// Which of `tags` (by position) one rule keeps: of those matching its
/// patterns, any that meets one of its criteria, or all with no criteria.
fn kept_by(rule: &KeepTags, tags: &[TagTimes], now: u64) -> Vec<usize> {
    let patterns: Vec<regex_lite::Regex> = rule
        .patterns
        .iter()
        .filter_map(|p| regex_lite::Regex::new(p).ok())
        .collect();
    let matching: Vec<usize> = (0..tags.len())
        .filter(|&i| patterns.is_empty() || patterns.iter().any(|p| p.is_match(&tags[i].tag)))
        .collect();
    let no_criteria = rule.most_recently_pushed_count.is_none()
        && rule.most_recently_pulled_count.is_none()
        && rule.pulled_within_ms.is_none()
        && rule.pushed_within_ms.is_none();
    if no_criteria {
        return matching;
    }
    let mut kept = Vec::new();
    // Newest first; ties by name, so a pass is deterministic.
    let ranked = |key: &dyn Fn(&TagTimes) -> Option<u64>| {
        let mut v: Vec<usize> = matching
            .iter()
            .copied()
            .filter(|&i| key(&tags[i]).is_some())
            .collect();
        v.sort_by(|&a, &b| {
            key(&tags[b])
                .cmp(&key(&tags[a]))
                .then_with(|| tags[a].tag.cmp(&tags[b].tag))
        });
        v
    };
    if let Some(n) = rule.most_recently_pushed_count {
        kept.extend(ranked(&|t| Some(t.pushed)).into_iter().take(n as usize));
    }
    if let Some(n) = rule.most_recently_pulled_count {
        kept.extend(ranked(&|t| t.pulled).into_iter().take(n as usize));
    }
    for &i in &matching {
        let t = &tags[i];
        let within = |at: Option<u64>, w: Option<u64>| match (at, w) {
            (Some(at), Some(w)) => now.saturating_sub(at) <= w,
            _ => false,
        };
        if within(Some(t.pushed), rule.pushed_within_ms) || within(t.pulled, rule.pulled_within_ms)
        {
            kept.push(i);
        }
    }
    kept
}
