//! zot's tag retention: which tags a `keep-tags` policy lets go.

use crate::bindings::exports::skiff::registry::gc::Policy;
use skiff_core::layout::ImageIndex;
use skiff_core::Digest;
use skiff_layout::{keys, stat, LayoutError};

/// (tag, digest) pairs to remove: tags no rule keeps, older than the delay.
pub fn doomed_tags(
    repo: &str,
    idx: &ImageIndex,
    policy: &Policy,
    now: u64,
) -> Result<Vec<(String, String)>, LayoutError> {
    let Some(rules) = &policy.keep_tags else {
        return Ok(Vec::new());
    };
    // Each tag with when its manifest was pushed (newest first).
    let mut tags: Vec<(String, String, u64)> = Vec::new();
    for d in &idx.manifests {
        let (Some(tag), Ok(digest)) = (d.tag(), d.digest.parse::<Digest>()) else {
            continue;
        };
        let pushed = stat(&keys::blob(repo, &digest))?.map_or(0, |m| m.modified_ms);
        tags.push((tag.to_string(), d.digest.clone(), pushed));
    }
    tags.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));

    let mut kept = vec![false; tags.len()];
    for rule in rules {
        let patterns: Vec<regex_lite::Regex> = rule
            .patterns
            .iter()
            .filter_map(|p| regex_lite::Regex::new(p).ok())
            .collect();
        let mut count = 0u32;
        for (i, (tag, _, _)) in tags.iter().enumerate() {
            let matches = patterns.is_empty() || patterns.iter().any(|p| p.is_match(tag));
            if !matches {
                continue;
            }
            if rule.most_recently_pushed_count.is_some_and(|n| count >= n) {
                continue;
            }
            count += 1;
            kept[i] = true;
        }
    }
    Ok(tags
        .into_iter()
        .zip(kept)
        .filter(|((_, _, pushed), keep)| !keep && now.saturating_sub(*pushed) >= policy.delay_ms)
        .map(|((tag, digest, _), _)| (tag, digest))
        .collect())
}
