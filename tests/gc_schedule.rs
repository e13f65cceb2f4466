//! A randomized (seeded, bounded) schedule of pushes, index pushes,
//! referrers, tag moves and deletes, promotions between repositories, file
//! aging and gc passes (dry runs and real ones) with retention rules. After
//! every step: each tagged image and everything it reaches pulls whole and
//! hashes right; nothing younger than the delay is gone; after a real pass,
//! what nothing reaches and is old is gone; a dry run changes nothing on disk.

mod common;

use common::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

const REPOS: [&str; 3] = ["ci/app", "prod/app", "misc/tool"];
const TAGS: [&str; 5] = ["v1", "v2", "v3", "v4", "latest"];

/// A tiny deterministic generator (xorshift64*), so a seed names a schedule.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// What the test knows of one manifest.
#[derive(Clone)]
struct Node {
    bytes: Vec<u8>,
    media_type: &'static str,
    /// Config and layers (of an image), with their bytes.
    blobs: Vec<(String, Vec<u8>)>,
    children: Vec<String>,
    subject: Option<String>,
}

#[derive(Default)]
struct Model {
    /// repo → manifest digest → node.
    nodes: BTreeMap<String, BTreeMap<String, Node>>,
    /// repo → tag → (manifest digest, push sequence number).
    tags: BTreeMap<String, BTreeMap<String, (String, u64)>>,
    /// (repo, digest) of everything stored since files were last aged.
    young: BTreeSet<(String, String)>,
    seq: u64,
}

impl Model {
    /// Young in some repository. With dedupe, one digest in several
    /// repositories is one file: touching it in one makes it young in all,
    /// which gc rightly honours (it keeps more, never less).
    fn young_anywhere(&self, d: &str) -> bool {
        self.young.iter().any(|(_, y)| y == d)
    }

    /// Manifests and blobs of `repo` that gc must keep: what tags and young
    /// manifests reach (through indexes and referrers).
    fn live(&self, repo: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let nodes = &self.nodes[repo];
        let mut manifests = BTreeSet::new();
        let mut pending: Vec<String> = self.tags[repo].values().map(|(d, _)| d.clone()).collect();
        pending.extend(nodes.keys().filter(|d| self.young_anywhere(d)).cloned());
        while let Some(d) = pending.pop() {
            if !manifests.insert(d.clone()) {
                continue;
            }
            if let Some(n) = nodes.get(&d) {
                pending.extend(n.children.iter().cloned());
            }
            for (rd, n) in nodes {
                if n.subject.as_deref() == Some(d.as_str()) {
                    pending.push(rd.clone());
                }
            }
        }
        let mut blobs: BTreeSet<String> = manifests.clone();
        for d in &manifests {
            if let Some(n) = nodes.get(d) {
                blobs.extend(n.blobs.iter().map(|(b, _)| b.clone()));
            }
        }
        (manifests, blobs)
    }
}

fn registry() -> Registry {
    Registry::start_with(|cfg| {
        // The server's own passes wait a day; `skiff gc` runs them here.
        cfg["storage"]["gcInterval"] = "24h".into();
        cfg["storage"]["gcDelay"] = "1h".into();
        cfg["storage"]["retention"] = json!({"delay": "1h", "policies": [
            {"repositories": ["ci/**"], "keepTags": [{"patterns": ["^v"], "mostRecentlyPushedCount": 2}]},
        ]});
    })
}

fn push_image(reg: &Registry, m: &mut Model, repo: &str, seed: u64) -> (String, Node) {
    let config = format!("{{\"seed\":{seed}}}").into_bytes();
    let layer = format!("layer {seed} {}", "x".repeat((seed % 7) as usize)).into_bytes();
    let cd = reg.push_blob(repo, &config);
    let ld = reg.push_blob(repo, &layer);
    let bytes = image_manifest(&cd, config.len(), &[(&ld, layer.len())], None, None);
    let d = sha256(&bytes);
    for b in [&cd, &ld, &d] {
        m.young.insert((repo.to_string(), b.clone()));
    }
    let node = Node {
        bytes,
        media_type: OCI_MANIFEST,
        blobs: vec![(cd, config), (ld, layer)],
        children: Vec::new(),
        subject: None,
    };
    (d, node)
}

fn put(reg: &Registry, m: &mut Model, repo: &str, reference: &str, d: &str, node: Node) {
    let r = reg.put_manifest(repo, reference, node.media_type, &node.bytes);
    assert_eq!(r.status, 201, "{repo} {reference}: {}", r.text());
    m.young.insert((repo.to_string(), d.to_string()));
    m.nodes.get_mut(repo).unwrap().insert(d.to_string(), node);
    if !reference.starts_with("sha256:") {
        // Push times are recorded in milliseconds: keep them apart, so the
        // order retention sees is the order of this schedule.
        std::thread::sleep(std::time::Duration::from_millis(2));
        m.seq += 1;
        let seq = m.seq;
        m.tags
            .get_mut(repo)
            .unwrap()
            .insert(reference.to_string(), (d.to_string(), seq));
    }
}

/// Every tagged image and all it reaches pulls whole and hashes right.
fn check_tagged(reg: &Registry, m: &Model, step: &str) {
    for repo in REPOS {
        let (manifests, _) = m.live(repo);
        for (tag, (d, _)) in &m.tags[repo] {
            let r = reg.get_manifest(repo, tag);
            assert_eq!(r.status, 200, "{step}: {repo}:{tag}");
            assert_eq!(&sha256(&r.body), d, "{step}: {repo}:{tag}");
        }
        for d in &manifests {
            let node = &m.nodes[repo][d];
            let r = reg
                .req("GET", &format!("/v2/{repo}/manifests/{d}"))
                .header("Accept", node.media_type)
                .send();
            assert_eq!(r.status, 200, "{step}: {repo}@{d}");
            assert_eq!(r.body, node.bytes, "{step}: {repo}@{d}");
            for (b, bytes) in &node.blobs {
                assert_eq!(&reg.pull_blob(repo, b), bytes, "{step}: {repo} blob {b}");
            }
        }
    }
}

fn present(reg: &Registry, repo: &str, d: &str) -> bool {
    reg.head(&format!("/v2/{repo}/blobs/{d}")).status == 200
}

/// What a schedule's real gc passes removed: (manifests, tags).
fn schedule(seed: u64, steps: usize) -> (usize, usize) {
    let mut removed = (0, 0);
    let reg = registry();
    let dry = {
        let mut cfg = read_json(&reg.config_path());
        cfg["storage"]["retention"]["dryRun"] = true.into();
        let p = reg.data.path().join("dry.json");
        std::fs::write(&p, cfg.to_string()).unwrap();
        p
    };
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut m = Model::default();
    for repo in REPOS {
        m.nodes.insert(repo.to_string(), BTreeMap::new());
        m.tags.insert(repo.to_string(), BTreeMap::new());
    }
    let mut counter = seed * 1000;
    for step in 0..steps {
        counter += 1;
        let repo = REPOS[rng.below(REPOS.len())];
        let tag = TAGS[rng.below(TAGS.len())];
        let op = rng.below(9);
        let label = format!("seed {seed} step {step} op {op} {repo}:{tag}");
        match op {
            // An image, tagged.
            0 | 1 => {
                let (d, node) = push_image(&reg, &mut m, repo, counter);
                put(&reg, &mut m, repo, tag, &d, node);
            }
            // A multi-arch index over two images pushed by digest.
            2 => {
                let mut children = Vec::new();
                for k in 0..2 {
                    let (d, node) = push_image(&reg, &mut m, repo, counter * 10 + k);
                    put(&reg, &mut m, repo, &d.clone(), &d, node.clone());
                    children.push((d, node.bytes.len()));
                }
                let bytes = serde_json::to_vec(&json!({
                    "schemaVersion": 2, "mediaType": OCI_INDEX,
                    "manifests": children.iter().map(|(d, n)| json!({"mediaType": OCI_MANIFEST, "digest": d, "size": n})).collect::<Vec<_>>(),
                }))
                .unwrap();
                let d = sha256(&bytes);
                let node = Node {
                    bytes,
                    media_type: OCI_INDEX,
                    blobs: Vec::new(),
                    children: children.into_iter().map(|(d, _)| d).collect(),
                    subject: None,
                };
                put(&reg, &mut m, repo, tag, &d, node);
            }
            // A signature of some tagged manifest.
            3 => {
                let Some((_, (subject, _))) = m.tags[repo].iter().nth(rng.below(TAGS.len())) else {
                    continue;
                };
                let subject = subject.clone();
                let size = m.nodes[repo][&subject].bytes.len();
                let config = b"{}".to_vec();
                let cd = reg.push_blob(repo, &config);
                m.young.insert((repo.to_string(), cd.clone()));
                let mut v: serde_json::Value = serde_json::from_slice(&image_manifest(
                    &cd,
                    2,
                    &[],
                    Some((&subject, size)),
                    Some("application/vnd.example.sig"),
                ))
                .unwrap();
                v["annotations"] = json!({"n": counter.to_string()});
                let bytes = serde_json::to_vec(&v).unwrap();
                let d = sha256(&bytes);
                let node = Node {
                    bytes,
                    media_type: OCI_MANIFEST,
                    blobs: vec![(cd, config)],
                    children: Vec::new(),
                    subject: Some(subject),
                };
                put(&reg, &mut m, repo, &d.clone(), &d, node);
            }
            // Move a tag onto another manifest of the repository.
            4 => {
                let tagged: Vec<String> = m.tags[repo].values().map(|(d, _)| d.clone()).collect();
                if tagged.is_empty() {
                    continue;
                }
                let d = tagged[rng.below(tagged.len())].clone();
                let node = m.nodes[repo][&d].clone();
                put(&reg, &mut m, repo, tag, &d, node);
            }
            // Delete a tag.
            5 => {
                if m.tags.get_mut(repo).unwrap().remove(tag).is_some() {
                    let r = reg.delete(&format!("/v2/{repo}/manifests/{tag}"));
                    assert_eq!(r.status, 202, "{label}: {}", r.text());
                }
            }
            // Promote a tagged image into another repository.
            6 => {
                let Some((t, (d, _))) = m.tags[repo]
                    .iter()
                    .next()
                    .map(|(t, v)| (t.clone(), v.clone()))
                else {
                    continue;
                };
                let node = m.nodes[repo][&d].clone();
                if !node.children.is_empty() {
                    continue;
                }
                let to = REPOS[(REPOS.iter().position(|r| *r == repo).unwrap() + 1) % REPOS.len()];
                for (b, _) in &node.blobs {
                    assert_eq!(reg.mount(to, b, repo).status, 201, "{label}: mount {b}");
                    m.young.insert((to.to_string(), b.clone()));
                }
                put(&reg, &mut m, to, &t, &d, node);
            }
            // Time passes: everything is old now.
            7 => {
                age_files_under(&reg.root(), LONG_AGO);
                m.young.clear();
            }
            // A gc pass: a dry run first, which must change nothing, then
            // the real one.
            _ => {
                let before = listing(&reg.root());
                let out = skiff_command("gc", &dry).output().unwrap();
                assert!(
                    out.status.success(),
                    "{label}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(
                    listing(&reg.root()),
                    before,
                    "{label}: the dry run changed the disk"
                );

                let old_tags = m.tags.clone();
                let out = skiff_command("gc", &reg.config_path()).output().unwrap();
                if std::env::var_os("SCHEDULE_DEBUG").is_some() {
                    eprintln!("{label}\n{}", String::from_utf8_lossy(&out.stdout));
                }
                assert!(
                    out.status.success(),
                    "{label}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                removed.1 += apply_retention(&reg, &mut m, &old_tags, &label);
                // Nothing young is gone; what nothing reaches and is old is.
                for repo in REPOS {
                    let (live_m, live_b) = m.live(repo);
                    for (d, node) in &m.nodes[repo] {
                        let young = m.young.contains(&(repo.to_string(), d.clone()));
                        if young || live_m.contains(d) {
                            assert!(present(&reg, repo, d), "{label}: {repo}@{d} went");
                        } else if !m.young_anywhere(d) {
                            assert!(
                                !present(&reg, repo, d),
                                "{label}: {repo}@{d} stayed, unreachable and old: subject {:?} (present {:?}), {} children, parents {:?}",
                                node.subject,
                                node.subject.as_ref().map(|s| present(&reg, repo, s)),
                                node.children.len(),
                                m.nodes[repo].iter().filter(|(_, n)| n.children.contains(d)).map(|(p, _)| (p.clone(), live_m.contains(p), m.young.contains(&(repo.to_string(), p.clone())), present(&reg, repo, p))).collect::<Vec<_>>()
                            );
                        }
                        for (b, _) in &node.blobs {
                            let young = m.young.contains(&(repo.to_string(), b.clone()));
                            if young || live_b.contains(b) {
                                assert!(present(&reg, repo, b), "{label}: {repo} blob {b} went");
                            }
                        }
                    }
                }
                // Forget what is gone, so later steps do not refer to it.
                for repo in REPOS {
                    let keep: BTreeSet<String> = m.nodes[repo]
                        .keys()
                        .filter(|d| present(&reg, repo, d))
                        .cloned()
                        .collect();
                    let before = m.nodes[repo].len();
                    m.nodes
                        .get_mut(repo)
                        .unwrap()
                        .retain(|d, _| keep.contains(d));
                    removed.0 += before - m.nodes[repo].len();
                }
            }
        }
        check_tagged(&reg, &m, &label);
    }
    removed
}

/// Check which tags a real pass removed against the retention rule (ci/**
/// keeps the two most recently pushed `^v` tags; others all tags), and
/// take them out of the model.
fn apply_retention(
    reg: &Registry,
    m: &mut Model,
    before: &BTreeMap<String, BTreeMap<String, (String, u64)>>,
    label: &str,
) -> usize {
    let mut removed = 0;
    for repo in REPOS {
        let r = reg.get(&format!("/v2/{repo}/tags/list"));
        let now: BTreeSet<String> = if r.status == 404 {
            BTreeSet::new()
        } else {
            r.json()["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect()
        };
        for (tag, (d, seq)) in &before[repo] {
            if now.contains(tag) {
                continue;
            }
            assert!(
                repo.starts_with("ci/"),
                "{label}: {repo}:{tag} removed without a rule"
            );
            assert!(
                !m.young.contains(&(repo.to_string(), d.clone())),
                "{label}: young {repo}:{tag} removed"
            );
            let newer_v = before[repo]
                .iter()
                .filter(|(t, (_, s))| t.starts_with('v') && s > seq)
                .count();
            assert!(
                !tag.starts_with('v') || newer_v >= 2,
                "{label}: {repo}:{tag} was among the two newest"
            );
            m.tags.get_mut(repo).unwrap().remove(tag);
            removed += 1;
        }
    }
    removed
}

#[test]
fn randomized_schedules_never_lose_what_is_in_use() {
    let (mut manifests, mut tags) = (0, 0);
    for seed in 1..=8 {
        let (m, t) = schedule(seed, 60);
        manifests += m;
        tags += t;
    }
    // The schedules did exercise removal, not only keeping.
    assert!(
        manifests > 0 && tags > 0,
        "removed {manifests} manifests, {tags} tags"
    );
    println!("real passes removed {manifests} manifests and {tags} tags by retention");
}
