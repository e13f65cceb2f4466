//! Online garbage collection of one repository.
//!
//! Mark and sweep without a lock: the mark reads `index.json` once; every
//! removal is either a compare-and-swap on `index.json` that removes only what
//! the mark doomed, or a delete of an object older than the policy's delay.
//! A push in flight writes blobs first and its manifest last, all within the
//! delay, so nothing it needs is young enough to be taken — and anything old
//! it reuses is re-checked against a fresh `index.json` just before blobs go.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "gc-job",
        with: {
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "skiff:registry/objects@0.1.0": skiff_layout::objects,
        },
    });
}

mod retention;

use bindings::exports::skiff::registry::gc::{Guest, Policy, Report};
use skiff_core::layout::ImageIndex;
use skiff_core::{Algorithm, Digest};
use skiff_layout::{keys, meta, remove_if, stat, walk, LayoutError};
use std::collections::BTreeSet;

struct Gc;

bindings::export!(Gc with_types_in bindings);

impl Guest for Gc {
    /// The walk also puts the catalog's index right (`catalog::reconcile`):
    /// it costs nothing more here, and the host calls this at start.
    fn repositories() -> Result<Vec<String>, String> {
        let found = meta::walk_repositories().map_err(|e| e.to_string())?;
        let listed: Vec<String> = found
            .iter()
            .filter(|r| r.has_index)
            .map(|r| r.name.clone())
            .collect();
        // The index only speeds the catalog up: gc goes on without it.
        if let Err(e) = skiff_layout::catalog::reconcile(&listed) {
            eprintln!("skiff gc: the catalog's index could not be updated: {e}");
        }
        Ok(found.into_iter().map(|r| r.name).collect())
    }

    fn run(repo: String, policy: Policy) -> Result<Report, String> {
        collect(&repo, &policy).map_err(|e| format!("{repo}: {e}"))
    }
}

fn now_ms() -> u64 {
    let t = wasip2::clocks::wall_clock::now();
    t.seconds * 1000 + u64::from(t.nanoseconds) / 1_000_000
}

/// Age in milliseconds of an object, `None` if it is gone.
fn age_ms(key: &str, now: u64) -> Result<Option<u64>, LayoutError> {
    Ok(stat(key)?.map(|m| now.saturating_sub(m.modified_ms)))
}

fn old_enough(key: &str, now: u64, delay: u64) -> Result<bool, LayoutError> {
    Ok(age_ms(key, now)?.is_some_and(|a| a >= delay))
}

/// Removes objects, or in a dry run only counts what it would remove: every
/// removal of a pass goes through here, so a dry run writes nothing.
#[derive(Clone, Copy)]
struct Sweep {
    dry_run: bool,
}

impl Sweep {
    /// Remove `key` if it is still at `version`; whether it went (or would).
    fn remove_if(self, key: &str, version: &str) -> Result<bool, LayoutError> {
        if self.dry_run {
            return Ok(true);
        }
        Ok(remove_if(key, version)?)
    }
}

fn collect(repo: &str, policy: &Policy) -> Result<Report, LayoutError> {
    let now = now_ms();
    let delay = policy.delay_ms;
    let sweep = Sweep {
        dry_run: policy.dry_run,
    };
    let mut report = Report {
        tags_removed: 0,
        manifests_removed: 0,
        blobs_removed: 0,
        bytes_freed: 0,
        uploads_removed: 0,
        repository_removed: false,
        blobs_scanned: 0,
        bytes_scanned: 0,
    };
    report.uploads_removed = sweep_uploads(repo, now, delay, sweep)?;
    sweep_temp_files(repo, now, delay, sweep)?;
    // Tag pushes into a large repository wait as entries of their own; each
    // pass brings its index.json up to date for tools that read it.
    if !sweep.dry_run {
        meta::fold(repo)?;
    }
    let Some((idx, _)) = meta::index(repo)? else {
        return Ok(report);
    };

    // Layouts written by other tools list referrers in index.json but have
    // no referrer entries: find them first (and record them, unless this is
    // a dry run), so the mark reaches them through their subjects rather
    // than collecting them as untagged.
    let listed_referrers = index_referrers(repo, &idx, sweep)?;

    // Tags the retention policy lets go (never one younger than the delay).
    let doomed_tags = retention::doomed_tags(repo, &idx, policy, now)?;

    // Mark: what the kept tags, the young or kept untagged manifests, and
    // (unless referrers of lost subjects go) every referrer reach.
    let roots = roots(repo, &idx, policy, &doomed_tags, now)?;
    let mut reached = walk::reach_with(repo, roots.iter().cloned(), true, &listed_referrers)?;
    if !policy.delete_referrers {
        let mut subjects: BTreeSet<Digest> = meta::subjects(repo)?.into_iter().collect();
        subjects.extend(listed_referrers.keys().cloned());
        for subject in subjects {
            let mut listed: Vec<walk::Root> = meta::referrers(repo, &subject)?
                .into_iter()
                .filter_map(|d| Some((d.digest.parse::<Digest>().ok()?, Some(d.media_type))))
                .collect();
            listed.extend(listed_referrers.get(&subject).cloned().unwrap_or_default());
            let more = walk::reach_with(repo, listed, true, &listed_referrers)?;
            reached.manifests.extend(more.manifests);
            reached.blobs.extend(more.blobs);
        }
    }

    // Sweep index.json: the doomed tags, and the entries the mark did not
    // reach that are untagged or lose their tag now (those go whole, as zot's
    // retention removes them, rather than linger untagged).
    let doomed_manifests: BTreeSet<String> = idx
        .manifests
        .iter()
        .filter(|d| {
            d.tag().is_none_or(|t| {
                doomed_tags
                    .iter()
                    .any(|(dt, dd)| dt == t && dd == &d.digest)
            })
        })
        .filter(|d| {
            d.digest
                .parse::<Digest>()
                .map(|dg| !reached.manifests.contains(&dg))
                .unwrap_or(false)
        })
        .map(|d| d.digest.clone())
        .collect();
    if !doomed_tags.is_empty() || !doomed_manifests.is_empty() {
        let mut tags_removed = 0;
        let mut manifests_removed = 0;
        let mut sweep_index = |idx: &mut ImageIndex| {
            let before = idx.manifests.len();
            tags_removed = 0;
            for (tag, digest) in &doomed_tags {
                // Only if the tag still names what the mark saw.
                if idx.by_tag(tag).is_some_and(|d| &d.digest == digest) && idx.remove_tag(tag) {
                    tags_removed += 1;
                }
            }
            let tagged: BTreeSet<String> = idx
                .manifests
                .iter()
                .filter(|d| d.tag().is_some())
                .map(|d| d.digest.clone())
                .collect();
            idx.manifests.retain(|d| {
                !(d.tag().is_none()
                    && doomed_manifests.contains(&d.digest)
                    && !tagged.contains(&d.digest))
            });
            manifests_removed = before - idx.manifests.len();
            Ok::<bool, LayoutError>(tags_removed > 0 || manifests_removed > 0)
        };
        if sweep.dry_run {
            sweep_index(&mut idx.clone())?;
        } else {
            meta::update_index(repo, sweep_index)?;
        }
        report.tags_removed = tags_removed;
        report.manifests_removed = manifests_removed as u32;
    }

    // Re-read the index: a manifest pushed since the mark may reuse an old blob.
    if let Some((fresh, _)) = meta::index(repo)? {
        let new_roots = walk::roots_of(&fresh.manifests)
            .into_iter()
            .filter(|(d, _)| !reached.manifests.contains(d));
        let more = walk::reach_with(repo, new_roots, true, &listed_referrers)?;
        reached.manifests.extend(more.manifests);
        reached.blobs.extend(more.blobs);
    }

    sweep_blobs(repo, &reached.blobs, now, delay, sweep, &mut report)?;
    if !sweep.dry_run {
        sweep_referrer_lists(repo)?;
        sweep_pull_markers(repo)?;
    }
    report.repository_removed = remove_if_empty(repo, now, delay, sweep)?;
    Ok(report)
}

/// Manifests the mark starts from.
fn roots(
    repo: &str,
    idx: &ImageIndex,
    policy: &Policy,
    doomed_tags: &[(String, String)],
    now: u64,
) -> Result<Vec<walk::Root>, LayoutError> {
    let mut out = Vec::new();
    for d in &idx.manifests {
        let Ok(digest) = d.digest.parse::<Digest>() else {
            continue;
        };
        let media_type = Some(d.media_type.as_str());
        let keep = match d.tag() {
            Some(t) => !doomed_tags.iter().any(|(dt, _)| dt == t),
            // Young manifests stay: younger than gcDelay (a push in flight)
            // or than retention's delay. One whose file is missing is not
            // young: its entry (left by a crash or another tool) can only
            // dangle.
            None if retention::manifest_age(repo, &digest, now)?
                .is_some_and(|a| a < policy.delay_ms.max(policy.retention_delay_ms)) =>
            {
                true
            }
            None if policy.delete_untagged => false,
            // zot's deleteReferrers holds whatever deleteUntagged says.
            None if policy.delete_referrers => !lost_subject(repo, &digest, media_type)?,
            None => true,
        };
        if keep {
            out.push((digest, Some(d.media_type.clone())));
        }
    }
    Ok(out)
}

/// Every manifest in the index that has a subject, by subject; each is also
/// recorded in its subject's referrer entries unless this is a dry run (a
/// no-op for what skiff pushed itself).
fn index_referrers(repo: &str, idx: &ImageIndex, sweep: Sweep) -> Result<walk::Extra, LayoutError> {
    let mut found = walk::Extra::new();
    for d in &idx.manifests {
        let Ok(digest) = d.digest.parse::<Digest>() else {
            continue;
        };
        let Some((m, size)) = walk::parse_stored(repo, &digest, Some(&d.media_type))? else {
            continue;
        };
        let Some(subject) = m.subject.clone() else {
            continue;
        };
        if !sweep.dry_run {
            meta::record_referrer(repo, &digest, size, &m, meta::Record::IfMissing)?;
        }
        found
            .entry(subject)
            .or_default()
            .push((digest, Some(d.media_type.clone())));
    }
    Ok(found)
}

/// Whether the manifest has a subject the repository no longer holds.
fn lost_subject(
    repo: &str,
    digest: &Digest,
    media_type: Option<&str>,
) -> Result<bool, LayoutError> {
    match walk::parse_stored(repo, digest, media_type)?.and_then(|(m, _)| m.subject) {
        Some(subject) => Ok(stat(&keys::blob(repo, &subject))?.is_none()),
        None => Ok(false),
    }
}

fn sweep_blobs(
    repo: &str,
    reached: &BTreeSet<Digest>,
    now: u64,
    delay: u64,
    sweep: Sweep,
    report: &mut Report,
) -> Result<(), LayoutError> {
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        for d in walk::list_digests(&keys::blobs_prefix(repo, alg.as_str()), alg.as_str())? {
            let key = keys::blob(repo, &d);
            let Some(m) = stat(&key)? else { continue };
            report.blobs_scanned += 1;
            report.bytes_scanned += m.size;
            if reached.contains(&d) || now.saturating_sub(m.modified_ms) < delay {
                continue;
            }
            // Only the version judged: a push that touched or rewrote the
            // blob since the stat has made it young again.
            if sweep.remove_if(&key, &m.version)? {
                report.blobs_removed += 1;
                report.bytes_freed += m.size;
            }
        }
    }
    Ok(())
}

/// Upload sessions nobody has touched for the delay: state and bytes.
fn sweep_uploads(repo: &str, now: u64, delay: u64, sweep: Sweep) -> Result<u32, LayoutError> {
    let children = skiff_layout::children(&keys::uploads_prefix(repo))?;
    let mut removed = 0;
    let ids: BTreeSet<String> = children
        .iter()
        .filter(|c| !c.is_prefix && !c.name.starts_with('.'))
        .map(|c| c.name.trim_end_matches(".json").to_string())
        .collect();
    for id in ids {
        let (state, data) = (keys::upload_state(repo, &id), keys::upload_data(repo, &id));
        let seen = [(stat(&data)?, data), (stat(&state)?, state)];
        let old = seen
            .iter()
            .filter_map(|(m, _)| m.as_ref())
            .all(|m| now.saturating_sub(m.modified_ms) >= delay);
        if !old {
            continue;
        }
        // Bytes first, each only as seen: a session written to since is
        // left whole (an append that raced this keeps its state record).
        let mut gone = true;
        for (m, key) in &seen {
            if let Some(m) = m {
                gone &= sweep.remove_if(key, &m.version)?;
            }
            if !gone {
                break;
            }
        }
        if gone {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Referrer entries whose manifest is gone. An entry goes only at the
/// version seen before its manifest was found missing: a push of that
/// manifest rewrites its entry after storing its bytes, so a push racing
/// this sweep keeps its entry.
fn sweep_referrer_lists(repo: &str) -> Result<(), LayoutError> {
    for subject in meta::subjects(repo)? {
        for (referrer, key) in meta::referrer_entries(repo, &subject)? {
            let Some(entry) = stat(&key)? else { continue };
            if stat(&keys::blob(repo, &referrer))?.is_none() {
                remove_if(&key, &entry.version)?;
            }
        }
    }
    Ok(())
}

/// Temporary files (`.tmp-…`) a crashed write or convergence left behind,
/// once older than the delay (a younger one may be a write in flight).
fn sweep_temp_files(repo: &str, now: u64, delay: u64, sweep: Sweep) -> Result<(), LayoutError> {
    let mut prefixes = vec![
        format!("{repo}/"),
        keys::uploads_prefix(repo),
        keys::tag_entries_prefix(repo),
    ];
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        prefixes.push(keys::blobs_prefix(repo, alg.as_str()));
        prefixes.push(keys::pulled_prefix(repo, alg.as_str()));
    }
    for subject in meta::subjects(repo)? {
        prefixes.push(keys::referrers(repo, &subject));
    }
    for prefix in prefixes {
        let children = skiff_layout::children(&prefix)?;
        for c in children
            .iter()
            .filter(|c| !c.is_prefix && c.name.starts_with(".tmp-"))
        {
            let key = format!("{prefix}{}", c.name);
            if let Some(m) = stat(&key)? {
                if now.saturating_sub(m.modified_ms) >= delay {
                    sweep.remove_if(&key, &m.version)?;
                }
            }
        }
    }
    Ok(())
}

/// Pull markers of manifests that are gone.
fn sweep_pull_markers(repo: &str) -> Result<(), LayoutError> {
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        for d in walk::list_digests(&keys::pulled_prefix(repo, alg.as_str()), alg.as_str())? {
            let key = keys::pulled(repo, &d);
            let Some(marker) = stat(&key)? else { continue };
            if stat(&keys::blob(repo, &d))?.is_none() {
                remove_if(&key, &marker.version)?;
            }
        }
    }
    Ok(())
}

/// A repository with no manifests, blobs or uploads left goes entirely.
fn remove_if_empty(repo: &str, now: u64, delay: u64, sweep: Sweep) -> Result<bool, LayoutError> {
    let Some((idx, version)) = meta::index(repo)? else {
        return Ok(false);
    };
    if !idx.manifests.is_empty() || !old_enough(&keys::index(repo), now, delay)? {
        return Ok(false);
    }
    // A young temporary file may be a write in flight: the repository stays
    // until a later pass (which also sweeps it once old). Old ones go, or
    // would in a dry run, so they do not count.
    let young_temp = |prefix: &str, name: &str| -> Result<bool, LayoutError> {
        Ok(name.starts_with(".tmp-")
            && stat(&format!("{prefix}{name}"))?
                .is_some_and(|m| now.saturating_sub(m.modified_ms) < delay))
    };
    let top = format!("{repo}/");
    for c in skiff_layout::children(&top)? {
        if young_temp(&top, &c.name)? {
            return Ok(false);
        }
    }
    for prefix in [
        keys::blobs_prefix(repo, "sha256"),
        keys::blobs_prefix(repo, "sha512"),
        keys::uploads_prefix(repo),
    ] {
        for c in skiff_layout::children(&prefix)? {
            if !c.name.starts_with(".tmp-") || young_temp(&prefix, &c.name)? {
                return Ok(false);
            }
        }
    }
    // The index goes last but one, and only as it was judged empty: a push
    // that landed a tag since keeps it. One that starts later recreates the
    // layout.
    if !sweep.remove_if(&keys::index(repo), &version)? {
        return Ok(false);
    }
    if !sweep.dry_run {
        skiff_layout::remove(&keys::index_previous(repo))?;
        skiff_layout::remove(&keys::oci_layout(repo))?;
        skiff_layout::catalog::remove(repo)?;
    }
    Ok(true)
}
