//! What the registry keeps beside the layouts to answer fast (each
//! instance's parsed `index.json` and catalog, checked by version; the
//! catalog's index `.skiff/catalog.json`) must never answer with a state
//! that did not exist, must follow changes made through other hosts or by
//! hand at once, and must be rebuilt from the layouts when it is missing or
//! out of step.

mod common;

use common::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const REPO: &str = "race/app";

/// What one tag has named over time, as its only writer saw it.
#[derive(Default)]
struct History {
    /// Acknowledged states in order (`None`: no such tag), starting absent.
    acked: Vec<Option<String>>,
    /// The state being written now, not yet acknowledged.
    pending: Option<Option<String>>,
}

/// The states a read of the tag that started when `before` was taken and
/// ended at `after` may see: the last acknowledged one when it started,
/// anything acknowledged since, and writes in flight at either end.
fn allowed(before: &(usize, Option<Option<String>>), h: &History) -> Vec<Option<String>> {
    let mut ok: Vec<Option<String>> = h.acked[before.0 - 1..].to_vec();
    ok.extend(before.1.clone());
    ok.extend(h.pending.clone());
    ok
}

fn snapshot(h: &Mutex<History>) -> (usize, Option<Option<String>>) {
    let h = h.lock().unwrap();
    (h.acked.len(), h.pending.clone())
}

#[test]
fn sixteen_clients_moving_pushing_and_deleting_tags_only_ever_read_states_that_existed() {
    race_tags(0);
}

/// The same race in a repository whose `index.json` is large enough that
/// tag pushes are kept as entries of their own until folded in.
#[test]
fn the_same_race_in_a_large_index_where_tag_pushes_wait_to_be_folded() {
    race_tags(1500);
}

/// Sixteen clients race on tags of a repository that also holds `filler`
/// tags written into its `index.json` by hand.
fn race_tags(filler: usize) {
    let reg = Arc::new(Registry::start());
    // Eight images to point tags at; each writer owns two tags.
    let images: Vec<(Vec<u8>, String)> = (0..8)
        .map(|i| {
            let (m, d) = reg.push_image(REPO, &format!("base-{i}"), &format!("race image {i}"));
            (m, d)
        })
        .collect();
    let index_path = reg.root().join(REPO).join("index.json");
    let filled = fill_by_hand(&index_path, &images[0].1, filler);
    if filler > 0 {
        assert!(filled > 256 << 10, "{filled} bytes");
    }
    let bytes_of: BTreeMap<String, Vec<u8>> =
        images.iter().map(|(m, d)| (d.clone(), m.clone())).collect();
    let bytes_of = Arc::new(bytes_of);
    let tags: Vec<String> = (0..16).map(|i| format!("t{i}")).collect();
    let histories: Arc<BTreeMap<String, Mutex<History>>> = Arc::new(
        tags.iter()
            .map(|t| {
                let h = History {
                    acked: vec![None],
                    pending: None,
                };
                (t.clone(), Mutex::new(h))
            })
            .collect(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));

    // Eight writers: move their tags between images, delete them, and push
    // new images (so the index keeps growing and changing).
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (reg, histories, images) = (reg.clone(), histories.clone(), images.clone());
            std::thread::spawn(move || {
                for step in 0..60usize {
                    let tag = format!("t{}", 2 * w + step % 2);
                    let h = &histories[&tag];
                    let pick = (w * 7 + step * 3) % images.len();
                    let delete = step % 5 == 4;
                    let next = (!delete).then(|| images[pick].1.clone());
                    h.lock().unwrap().pending = Some(next.clone());
                    let r = if delete {
                        reg.delete(&format!("/v2/{REPO}/manifests/{tag}"))
                    } else {
                        reg.put_manifest(REPO, &tag, OCI_MANIFEST, &images[pick].0)
                    };
                    match (delete, r.status) {
                        (false, 201) | (true, 202) => {}
                        // Deleting a tag that is already gone.
                        (true, 404) => {}
                        (_, s) => panic!("writer {w} step {step}: {s} {}", r.text()),
                    }
                    let mut h = h.lock().unwrap();
                    h.acked.push(next);
                    h.pending = None;
                    if step % 10 == 0 {
                        drop(h);
                        reg.push_image(REPO, &format!("w{w}-{step}"), &format!("w{w} {step}"));
                    }
                }
            })
        })
        .collect();

    // Eight readers: every answer is one of the states the tag was in while
    // the read ran, and a 200 carries that manifest's exact bytes.
    let readers: Vec<_> = (0..8)
        .map(|r| {
            let (reg, histories, bytes_of, done, reads, tags) = (
                reg.clone(),
                histories.clone(),
                bytes_of.clone(),
                done.clone(),
                reads.clone(),
                tags.clone(),
            );
            std::thread::spawn(move || {
                let mut i = r;
                while !done.load(Ordering::SeqCst) {
                    let tag = &tags[i % tags.len()];
                    i += 1;
                    let h = &histories[tag];
                    let before = snapshot(h);
                    let head = i % 3 == 0;
                    let resp = if head {
                        reg.head(&format!("/v2/{REPO}/manifests/{tag}"))
                    } else {
                        reg.get_manifest(REPO, tag)
                    };
                    let seen = match resp.status {
                        200 => {
                            let d = resp
                                .header("Docker-Content-Digest")
                                .expect("a digest header")
                                .to_string();
                            if !head {
                                assert_eq!(
                                    Some(&resp.body),
                                    bytes_of.get(&d),
                                    "{tag}: the body is not the manifest {d}"
                                );
                            }
                            Some(d)
                        }
                        404 => None,
                        s => panic!("reading {tag}: {s} {}", resp.text()),
                    };
                    let ok = allowed(&before, &h.lock().unwrap());
                    assert!(
                        ok.contains(&seen),
                        "{tag}: read {seen:?}, but while the read ran it was one of {ok:?}"
                    );
                    if i % 16 == 0 {
                        let list = reg.get(&format!("/v2/{REPO}/tags/list?n=5"));
                        assert_eq!(list.status, 200, "{}", list.text());
                        let got = list.json()["tags"].as_array().unwrap().len();
                        assert!(got <= 5, "a page of 5 held {got}");
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        r.join().unwrap();
    }
    assert!(reads.load(Ordering::SeqCst) > 100, "the readers barely ran");

    // Afterwards the API serves what the writers last did; once a gc pass
    // has folded what waits, the layout says the same.
    let listed = all_tags(&reg, REPO, 7);
    for (tag, h) in histories.iter() {
        let last = h.lock().unwrap().acked.last().cloned().unwrap();
        let r = reg.get_manifest(REPO, tag);
        let served =
            (r.status == 200).then(|| r.header("Docker-Content-Digest").unwrap().to_string());
        assert_eq!(served, last, "{tag} through the API");
        assert_eq!(
            listed.contains(tag),
            last.is_some(),
            "{tag} in the tag list"
        );
    }
    gc_pass(&reg);
    assert_eq!(tag_entries(&reg, REPO), Vec::<String>::new());
    let on_disk = layout_tags(&reg.root().join(REPO));
    for (tag, h) in histories.iter() {
        let last = h.lock().unwrap().acked.last().cloned().unwrap();
        assert_eq!(
            on_disk.get(tag).map(|t| t.1.clone()),
            last,
            "{tag} in index.json"
        );
    }
    assert_eq!(listed, on_disk.keys().cloned().collect::<Vec<_>>());
    assert_eq!(
        listed.len(),
        filler + 8 + 48 + listed.iter().filter(|t| t.starts_with('t')).count()
    );
}

/// Add `n` tags `f00000`.. naming `digest` to the `index.json` at `path` by
/// hand, each padded to about 450 bytes; the size it then has.
fn fill_by_hand(path: &std::path::Path, digest: &str, n: usize) -> usize {
    let mut index = read_json(path);
    let manifests = index["manifests"].as_array_mut().unwrap();
    let template = manifests
        .iter()
        .find(|d| d["digest"] == json!(digest))
        .unwrap()
        .clone();
    for i in 0..n {
        let mut d = template.clone();
        d["annotations"]["org.opencontainers.image.ref.name"] = json!(format!("f{i:05}"));
        d["annotations"]["padding"] = json!("p".repeat(200));
        manifests.push(d);
    }
    let text = serde_json::to_vec(&index).unwrap();
    std::fs::write(path, &text).unwrap();
    text.len()
}

/// One gc pass over the registry's store, as `skiff gc` runs it.
fn gc_pass(reg: &Registry) {
    let out = skiff_command("gc", &reg.config_path()).output().unwrap();
    assert!(
        out.status.success(),
        "skiff gc: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tags of `repo` kept as entries, not yet folded into `index.json`.
fn tag_entries(reg: &Registry, repo: &str) -> Vec<String> {
    let mut names: Vec<String> = names_in(&reg.root().join(repo).join(".tags"))
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Every tag of `repo`, read `n` at a time through the `Link` headers.
fn all_tags(reg: &Registry, repo: &str, n: usize) -> Vec<String> {
    paged(reg, &format!("/v2/{repo}/tags/list?n={n}"), "tags")
}

/// Every repository, read `n` at a time.
fn catalog(reg: &Registry, n: usize) -> Vec<String> {
    paged(reg, &format!("/v2/_catalog?n={n}"), "repositories")
}

fn paged(reg: &Registry, first: &str, field: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = Some(first.to_string());
    while let Some(path) = next.take() {
        let r = reg.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        out.extend(
            r.json()[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string()),
        );
        next = r.header("Link").map(|l| {
            let start = l.find('<').unwrap() + 1;
            l[start..l.find('>').unwrap()].to_string()
        });
    }
    out
}

fn two_hosts() -> (Registry, Registry) {
    let a = Registry::start_with(|cfg| cfg["storage"]["dedupe"] = false.into());
    let root = a.root();
    let b = Registry::start_with(|cfg| {
        cfg["storage"]["rootDirectory"] = root.to_str().unwrap().into();
        cfg["storage"]["dedupe"] = false.into();
    });
    (a, b)
}

fn digest_of(reg: &Registry, repo: &str, tag: &str) -> Option<String> {
    let r = reg.head(&format!("/v2/{repo}/manifests/{tag}"));
    match r.status {
        200 => Some(r.header("Docker-Content-Digest").unwrap().to_string()),
        404 => None,
        s => panic!("HEAD {repo}:{tag}: {s}"),
    }
}

#[test]
fn a_tag_moved_through_one_host_is_seen_through_the_other_on_the_next_request() {
    let (a, b) = two_hosts();
    let x = a.push_image("shared/app", "x", "image x");
    let y = a.push_image("shared/app", "y", "image y");
    for round in 0..40 {
        let (writer, reader) = if round % 4 < 2 { (&a, &b) } else { (&b, &a) };
        let (bytes, digest) = if round % 2 == 0 { &y } else { &x };
        // The reader has the index parsed from the round before.
        let before = digest_of(reader, "shared/app", "moving");
        assert_ne!(before.as_ref(), Some(digest), "round {round}");
        let r = writer.put_manifest("shared/app", "moving", OCI_MANIFEST, bytes);
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(
            digest_of(reader, "shared/app", "moving").as_ref(),
            Some(digest),
            "round {round}: the other host still serves the old tag"
        );
        assert_eq!(all_tags(reader, "shared/app", 2), ["moving", "x", "y"]);
    }
    // A deleted tag is gone on the other host at once.
    assert_eq!(a.delete("/v2/shared/app/manifests/moving").status, 202);
    assert_eq!(digest_of(&b, "shared/app", "moving"), None);
    assert_eq!(all_tags(&b, "shared/app", 2), ["x", "y"]);
    // A repository created through one host is in the other's catalog.
    assert_eq!(catalog(&a, 10), ["shared/app"]);
    b.push_image("shared/second", "v1", "second");
    assert_eq!(
        catalog(&a, 1),
        ["shared/app", "shared/second"],
        "a's catalog after b created a repository"
    );
}

#[test]
fn an_index_json_rewritten_by_hand_is_served_on_the_next_request() {
    let reg = Registry::start();
    let (_, x) = reg.push_image("byhand/app", "x", "image x");
    let (_, y) = reg.push_image("byhand/app", "y", "image y");
    assert_eq!(digest_of(&reg, "byhand/app", "x").as_ref(), Some(&x));
    // A tool edits the layout directly: "x" now names y, "z" is new, and a
    // ref.name that is not a tag is not listed.
    let path = reg.root().join("byhand/app/index.json");
    let mut index = read_json(&path);
    let manifests = index["manifests"].as_array_mut().unwrap();
    for d in manifests.iter_mut() {
        if d["digest"] == json!(y) {
            d["annotations"]["org.opencontainers.image.ref.name"] = json!("x");
        }
    }
    let mut z = manifests
        .iter()
        .find(|d| d["digest"] == json!(y))
        .unwrap()
        .clone();
    z["annotations"]["org.opencontainers.image.ref.name"] = json!("z");
    let mut full = z.clone();
    full["annotations"]["org.opencontainers.image.ref.name"] = json!("example.com/app:1");
    manifests.retain(|d| d["digest"] != json!(x));
    manifests.push(z);
    manifests.push(full);
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    assert_eq!(digest_of(&reg, "byhand/app", "x").as_ref(), Some(&y));
    assert_eq!(digest_of(&reg, "byhand/app", "z").as_ref(), Some(&y));
    assert_eq!(digest_of(&reg, "byhand/app", "y"), None);
    assert_eq!(all_tags(&reg, "byhand/app", 1), ["x", "z"]);
}

/// The names of the repositories the layouts under `root` make.
fn layouts_under(root: &std::path::Path) -> Vec<String> {
    let mut out = BTreeSet::new();
    for entry in walk(root) {
        if entry.file_name().and_then(|n| n.to_str()) == Some("index.json") {
            let dir = entry.parent().unwrap().strip_prefix(root).unwrap();
            out.insert(dir.to_str().unwrap().to_string());
        }
    }
    out.into_iter().collect()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if p.is_dir() {
            if !name.starts_with('.') && name != "blobs" {
                out.extend(walk(&p));
            }
        } else {
            out.push(p);
        }
    }
    out
}

/// Another server on `stopped`'s root (its data stays while it is alive).
fn again_on(stopped: &Registry) -> Registry {
    let root = stopped.root();
    Registry::start_with(|cfg| cfg["storage"]["rootDirectory"] = root.to_str().unwrap().into())
}

#[test]
fn the_catalog_index_is_rebuilt_from_layouts_placed_by_hand_and_after_a_crash() {
    let mut first = Registry::start();
    first.push_image("one/app", "v1", "one");
    first.push_image("two/app", "v1", "two");
    assert_eq!(catalog(&first, 1), ["one/app", "two/app"]);
    let root = first.root();
    let index_file = root.join(".skiff/catalog.json");
    assert!(
        index_file.is_file(),
        "the catalog's index is kept beside the layouts"
    );
    // SIGKILL: a crash.
    first.stop();

    // While it is down: a layout placed by hand, a layout removed by hand,
    // and an index that lists a repository whose creation crashed before
    // its layout was written (a name with no layout).
    let mut placed = Layout::create(&root.join("placed/by/hand"));
    let layer = placed.blob("application/vnd.oci.image.layer.v1.tar", b"by hand");
    let (desc, _) = placed.image("amd64", &layer);
    placed.tag("v1", &desc);
    placed.save();
    std::fs::remove_dir_all(root.join("two")).unwrap();
    let mut listed = read_json(&index_file);
    listed["repositories"]
        .as_array_mut()
        .unwrap()
        .push(json!("zz/never/written"));
    std::fs::write(&index_file, listed.to_string()).unwrap();

    let mut second = again_on(&first);
    let expected = layouts_under(&root);
    assert_eq!(expected, ["one/app", "placed/by/hand"]);
    assert!(
        eventually(std::time::Duration::from_secs(10), || catalog(&second, 2)
            == expected),
        "the catalog after restart: {:?}",
        catalog(&second, 100)
    );
    assert_eq!(
        second.get_manifest("placed/by/hand", "v1").status,
        200,
        "the hand-placed layout is served"
    );
    second.stop();

    // No index at all (a store from before it existed): the first read builds it.
    std::fs::remove_file(&index_file).unwrap();
    let third = again_on(&first);
    assert_eq!(catalog(&third, 100), expected);
    // And it is kept up to date from then on.
    third.push_image("three/app", "v1", "three");
    assert_eq!(
        catalog(&third, 1),
        ["one/app", "placed/by/hand", "three/app"]
    );
    assert_eq!(
        read_json(&index_file)["repositories"],
        json!(["one/app", "placed/by/hand", "three/app"])
    );
}

#[test]
fn gc_removing_an_empty_repository_takes_it_out_of_the_catalog() {
    let reg = Registry::start_with(|cfg| {
        cfg["storage"]["gcDelay"] = json!("1s");
        cfg["storage"]["gcInterval"] = json!("1s");
    });
    reg.push_image("keep/app", "v1", "keep");
    let (_, d) = reg.push_image("empty/app", "v1", "soon empty");
    assert_eq!(
        reg.delete(&format!("/v2/empty/app/manifests/{d}")).status,
        202
    );
    assert!(
        eventually(std::time::Duration::from_secs(20), || catalog(&reg, 10)
            == ["keep/app"]),
        "the catalog still lists the removed repository: {:?}",
        catalog(&reg, 10)
    );
    assert!(!reg.root().join("empty/app/index.json").exists());
}

#[test]
fn eight_clients_pushing_different_tags_into_one_repository_all_succeed() {
    let reg = Arc::new(Registry::start());
    let repo = "group/app";
    let (m, _) = reg.push_image(repo, "seed", "group commit");
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (reg, m) = (reg.clone(), m.clone());
            std::thread::spawn(move || {
                for i in 0..150 {
                    let r = reg.put_manifest(repo, &format!("w{w}-{i:03}"), OCI_MANIFEST, &m);
                    assert_eq!(r.status, 201, "w{w}-{i}: {}", r.text());
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let tags = all_tags(&reg, repo, 500);
    assert_eq!(tags.len(), 8 * 150 + 1);
    // Past about a thousand tags, pushes wait as entries until folded in;
    // a gc pass folds what is left.
    gc_pass(&reg);
    assert_eq!(
        layout_tags(&reg.root().join(repo)).len(),
        tags.len(),
        "index.json holds every tag"
    );
}

/// Without `n`, the catalog and a tag list are streamed a store page at a
/// time rather than built whole: longer than one page (1000 entries), they
/// must still come complete, in order, and equal to the paged answer.
#[test]
fn a_catalog_and_a_tag_list_longer_than_a_store_page_come_whole_without_n() {
    const N: usize = 1100;
    let reg = Arc::new(Registry::start());
    let from = "long/app";
    let (m, _) = reg.push_image(from, "seed", "long lists");
    let manifest: serde_json::Value = serde_json::from_slice(&m).unwrap();
    let blobs: Vec<String> = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().unwrap())
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (reg, m, blobs, next) = (reg.clone(), m.clone(), blobs.clone(), next.clone());
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= N {
                    return;
                }
                let repo = format!("long/r{i:04}");
                for b in &blobs {
                    assert_eq!(reg.mount(&repo, b, from).status, 201);
                }
                let tagged = reg.put_manifest(from, &format!("t{i:04}"), OCI_MANIFEST, &m);
                assert_eq!(tagged.status, 201, "{}", tagged.text());
                let r = reg.put_manifest(&repo, "v1", OCI_MANIFEST, &m);
                assert_eq!(r.status, 201, "{repo}: {}", r.text());
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }

    for (path, field, paged_path, len) in [
        ("/v2/_catalog", "repositories", "/v2/_catalog?n=400", N + 1),
        (
            "/v2/long/app/tags/list",
            "tags",
            "/v2/long/app/tags/list?n=400",
            N + 1,
        ),
    ] {
        let r = reg.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(
            r.header("content-length").is_none(),
            "{path} is streamed, so its length is not known up front"
        );
        let whole: Vec<String> = r.json()[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(whole.len(), len, "{path}");
        let mut sorted = whole.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, whole, "{path} is sorted, without duplicates");
        assert_eq!(
            paged(&reg, paged_path, field),
            whole,
            "{path} whole = paged"
        );
    }
    // The first page is read before the response starts: a missing
    // repository is still a clean 404.
    let r = reg.get("/v2/no/such/tags/list");
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "NAME_UNKNOWN");
}

/// Past 1 MiB an index is looked up through tables the host keeps for all
/// instances (`objects.remember`); they must answer for the version on disk
/// only, through either host, after pushes, deletes and hand edits.
#[test]
fn a_large_index_remembered_by_the_host_follows_every_change_through_both_hosts() {
    let (a, b) = two_hosts();
    let (xb, x) = a.push_image("big/app", "x", "image x");
    let (_, y) = a.push_image("big/app", "y", "image y");
    // Fill the index by hand with 6000 more tags naming x (about 2 MiB).
    let path = a.root().join("big/app/index.json");
    let size = fill_by_hand(&path, &x, 6000);
    assert!(size > 1 << 20, "{size} bytes");
    let mut expected: Vec<String> = (0..6000).map(|i| format!("f{i:05}")).collect();
    expected.extend(["x".to_string(), "y".to_string()]);
    for reg in [&a, &b] {
        assert_eq!(digest_of(reg, "big/app", "f04321").as_ref(), Some(&x));
        assert_eq!(digest_of(reg, "big/app", "y").as_ref(), Some(&y));
        assert_eq!(digest_of(reg, "big/app", "f06000"), None);
        assert_eq!(all_tags(reg, "big/app", 1000), expected);
        // By digest too: the listed media type comes from the host's table.
        let r = reg.get_manifest("big/app", &x);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some(OCI_MANIFEST));
    }
    // Moves and deletes through one host are seen through the other at once.
    for round in 0..6 {
        let (writer, reader) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let r = writer.put_manifest(
            "big/app",
            "f00007",
            OCI_MANIFEST,
            &a.get_manifest("big/app", &y).body,
        );
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(
            digest_of(reader, "big/app", "f00007").as_ref(),
            Some(&y),
            "round {round}"
        );
        let r = writer.put_manifest("big/app", "f00007", OCI_MANIFEST, &xb);
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(
            digest_of(reader, "big/app", "f00007").as_ref(),
            Some(&x),
            "round {round}"
        );
    }
    assert_eq!(b.delete("/v2/big/app/manifests/f00100").status, 202);
    assert_eq!(digest_of(&a, "big/app", "f00100"), None);
    let page = a.get("/v2/big/app/tags/list?n=3&last=f00098").json();
    assert_eq!(page["tags"], json!(["f00099", "f00101", "f00102"]));
    // A hand edit of the large index is served on the next request.
    let mut index = read_json(&path);
    for d in index["manifests"].as_array_mut().unwrap() {
        if d["annotations"]["org.opencontainers.image.ref.name"] == json!("f00200") {
            d["digest"] = json!(y);
        }
    }
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    for reg in [&a, &b] {
        assert_eq!(digest_of(reg, "big/app", "f00200").as_ref(), Some(&y));
    }
}

/// In a large repository a tag push writes an entry of its own instead of
/// the whole `index.json`; what the registry serves is the index with the
/// entries over it, through every host, across a restart and a gc pass,
/// and the entries are folded into `index.json` once enough wait.
#[test]
fn tag_pushes_into_a_large_index_wait_as_entries_and_are_folded_in() {
    let (mut a, b) = two_hosts();
    let (xb, x) = a.push_image("big/journal", "x", "image x");
    let (yb, y) = a.push_image("big/journal", "y", "image y");
    let path = a.root().join("big/journal/index.json");
    fill_by_hand(&path, &x, 1500);
    let dir = a.root().join("big/journal");
    let on_disk = || layout_tags(&dir);

    // A push waits as an entry, and both hosts serve it at once.
    assert_eq!(
        a.put_manifest("big/journal", "new", OCI_MANIFEST, &yb)
            .status,
        201
    );
    assert_eq!(tag_entries(&a, "big/journal"), ["new"]);
    assert!(!on_disk().contains_key("new"), "index.json was rewritten");
    for reg in [&a, &b] {
        assert_eq!(digest_of(reg, "big/journal", "new").as_ref(), Some(&y));
        let r = reg.get_manifest("big/journal", "new");
        assert_eq!((r.status, &r.body), (200, &yb));
        let page = reg.get("/v2/big/journal/tags/list?n=2&last=f01499").json();
        assert_eq!(page["tags"], json!(["new", "x"]));
    }
    // Moving a tag the index holds: the entry wins over it.
    assert_eq!(
        b.put_manifest("big/journal", "f00003", OCI_MANIFEST, &yb)
            .status,
        201
    );
    assert_eq!(digest_of(&a, "big/journal", "f00003").as_ref(), Some(&y));
    assert_eq!(on_disk()["f00003"].1, x);
    // A manifest named only by an entry is in use: its blob cannot go.
    let (zb, z) = a.push_image("big/journal", "z-only", "image z");
    let r = a.delete(&format!("/v2/big/journal/blobs/{z}"));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(tag_entries(&a, "big/journal").contains(&"z-only".to_string()));

    // Entries are stored: a restart loses none.
    a.restart();
    assert_eq!(digest_of(&a, "big/journal", "z-only").as_ref(), Some(&z));
    assert_eq!(digest_of(&a, "big/journal", "new").as_ref(), Some(&y));

    // Enough entries, and the push that makes them enough folds them all.
    for i in 0..300 {
        let r = b.put_manifest("big/journal", &format!("p{i:03}"), OCI_MANIFEST, &xb);
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let waiting = tag_entries(&a, "big/journal");
    assert!(waiting.len() < 256, "{} entries wait", waiting.len());
    let folded = on_disk();
    for t in ["new", "z-only", "p000"] {
        assert!(folded.contains_key(t), "{t} not folded in");
    }
    assert_eq!(folded["f00003"].1, y);
    let mut expected: Vec<String> = (0..1500).map(|i| format!("f{i:05}")).collect();
    expected.extend(["new", "x", "y", "z-only"].map(String::from));
    expected.extend((0..300).map(|i| format!("p{i:03}")));
    expected.sort();
    for reg in [&a, &b] {
        assert_eq!(all_tags(reg, "big/journal", 100), expected);
        assert_eq!(digest_of(reg, "big/journal", "p299").as_ref(), Some(&x));
    }

    // Deleting a tag folds the rest first, so nothing waits after it.
    assert_eq!(a.delete("/v2/big/journal/manifests/new").status, 202);
    assert_eq!(tag_entries(&a, "big/journal"), Vec::<String>::new());
    assert!(!on_disk().contains_key("new"));
    assert_eq!(digest_of(&b, "big/journal", "new"), None);

    // A gc pass folds what waits, keeps what entries name, and scrub
    // finds the layout whole.
    assert_eq!(
        b.put_manifest("big/journal", "late", OCI_MANIFEST, &zb)
            .status,
        201
    );
    assert_eq!(tag_entries(&a, "big/journal"), ["late"]);
    gc_pass(&a);
    assert_eq!(tag_entries(&a, "big/journal"), Vec::<String>::new());
    assert_eq!(on_disk()["late"].1, z);
    let r = a.get_manifest("big/journal", "late");
    assert_eq!((r.status, &r.body), (200, &zb));
    let (ok, text) = scrub(&a, &[]);
    assert!(ok, "{text}");

    // A damaged entry is passed over (its tag serves what index.json says),
    // and scrub names it and removes it on repair.
    std::fs::create_dir_all(a.root().join("big/journal/.tags")).unwrap();
    std::fs::write(a.root().join("big/journal/.tags/x"), b"{\"torn").unwrap();
    assert_eq!(digest_of(&a, "big/journal", "x").as_ref(), Some(&x));
    assert_eq!(
        a.put_manifest("big/journal", "after", OCI_MANIFEST, &yb)
            .status,
        201
    );
    let (ok, text) = scrub(&a, &[]);
    assert!(!ok && text.contains(".tags/x"), "{text}");
    let (ok, text) = scrub(&a, &["--repair"]);
    assert!(!ok && text.contains("removed"), "{text}");
    assert_eq!(tag_entries(&a, "big/journal"), ["after"]);
    let (ok, text) = scrub(&a, &[]);
    assert!(ok, "{text}");
}

/// `skiff scrub` on the registry's store: whether it found it whole, and
/// what it said.
fn scrub(reg: &Registry, flags: &[&str]) -> (bool, String) {
    let out = skiff_command("scrub", &reg.config_path())
        .args(flags)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
