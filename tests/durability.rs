//! Durability and lifecycle: damaged blobs get repaired, what a crash leaves
//! behind is collected, a retried finish succeeds, and with `commit: true`
//! every new name is synced in the right order (checked with strace).

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

/// `skiff <args…> CONFIG`; (success, stdout).
fn run(config: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = skiff_command(args[0], config);
    // skiff_command puts the config right after the command; flags follow.
    cmd.args(&args[1..]);
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn scrub_names_the_images_a_damaged_blob_breaks_and_repair_removes_it() {
    let reg = Registry::start();
    let (m, _) = reg.push_image("dmg/app", "v1", "damaged");
    reg.put_manifest("dmg/app", "also", OCI_MANIFEST, &m);
    reg.push_image("dmg/app", "v2", "intact");
    let layer = b"layer of damaged".to_vec();
    let d = sha256(&layer);
    // Same size, one byte off: only hashing finds it.
    std::fs::write(reg.blob_path("dmg/app", &d), b"layer of damageD").unwrap();

    let (ok, text) = run(&reg.config_path(), &["scrub"]);
    assert!(!ok, "{text}");
    let row = text.lines().find(|l| l.contains(&d)).expect(&text);
    assert!(
        row.contains("affected") && row.contains("also") && row.contains("v1"),
        "{row}"
    );
    assert!(!row.contains("v2"), "{row}");

    let (ok, text) = run(&reg.config_path(), &["scrub", "--repair"]);
    assert!(!ok, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(&d) && l.contains("removed")),
        "{text}"
    );
    assert_eq!(reg.get(&format!("/v2/dmg/app/blobs/{d}")).status, 404);
    // The next push of the same bytes restores the image.
    reg.push_blob("dmg/app", &layer);
    assert_eq!(reg.pull_blob("dmg/app", &d), layer);
    let (ok, text) = run(&reg.config_path(), &["scrub"]);
    assert!(ok, "{text}");
}

#[test]
fn a_retried_finish_answers_201() {
    let reg = Registry::start();
    let blob = b"finished once already".to_vec();
    let d = sha256(&blob);
    let loc = reg.open_upload("retry/app").location();
    let r = reg.patch_upload(&loc, &blob).send();
    assert_eq!(r.status, 202);
    let loc = r.location();
    // What a crash right after the publish leaves: the blob in place, the
    // upload's bytes gone, its state record still there.
    let id = loc.rsplit('/').next().unwrap().split('?').next().unwrap();
    let uploads = reg.root().join("retry/app/.uploads");
    let path = reg.blob_path("retry/app", &d);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::rename(uploads.join(id), &path).unwrap();
    assert!(uploads.join(format!("{id}.json")).exists());

    let r = reg.close_upload(&loc, &d).send();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.location(), format!("/v2/retry/app/blobs/{d}"));
    assert_eq!(reg.pull_blob("retry/app", &d), blob);
    assert!(
        !uploads.join(format!("{id}.json")).exists(),
        "the session is closed"
    );
}

#[test]
fn what_killed_first_pushes_leave_is_collected() {
    let mut reg = Registry::start_with(|cfg| {
        cfg["storage"]["gcDelay"] = "1h".into();
        cfg["storage"]["gcInterval"] = "24h".into();
    });
    reg.push_image("old/app", "v1", "kept");
    // First pushes into new repositories, killed mid-body.
    let mut stalled = Vec::new();
    for i in 0..3 {
        let loc = reg.open_upload(&format!("brand/new/repo{i}")).location();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", reg.port)).unwrap();
        use std::io::Write;
        write!(
            s,
            "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n"
        )
        .unwrap();
        s.write_all(&vec![1u8; 300_000]).unwrap();
        stalled.push(s);
    }
    // Let the bodies reach the disk, then kill the server.
    let root = reg.root();
    assert!(eventually(Duration::from_secs(30), || {
        (0..3).all(|i| {
            files_under(&root.join(format!("brand/new/repo{i}/.uploads")))
                .iter()
                .any(|f| {
                    std::fs::metadata(root.join(format!("brand/new/repo{i}/.uploads")).join(f))
                        .is_ok_and(|m| m.len() > 0)
                })
        })
    }));
    reg.stop();
    drop(stalled);
    // And the temporary files crashed writes leave.
    for dir in [
        "old/app",
        "old/app/blobs/sha256",
        "brand/new/repo0/.uploads",
    ] {
        std::fs::write(
            root.join(dir).join(".tmp-00000000deadbeef-index.json"),
            b"partial",
        )
        .unwrap();
    }
    age_files_under(&root.join("brand"), LONG_AGO);
    age_files_under(&root.join("old/app"), LONG_AGO);
    let (ok, text) = run(&reg.config_path(), &["gc"]);
    assert!(ok, "{text}");
    let left: Vec<String> = files_under(&root)
        .into_iter()
        .filter(|f| f.contains(".uploads") || f.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}\n{text}");
    assert!(
        !root.join("brand").exists(),
        "the never-finished repositories are gone"
    );
    // The real repository is untouched.
    let reg =
        Registry::start_with(|cfg| cfg["storage"]["rootDirectory"] = root.to_str().unwrap().into());
    assert_eq!(reg.get_manifest("old/app", "v1").status, 200);
}

/// A registry whose server runs under `strace -f -y`, tracing `calls`.
struct Traced {
    reg: Registry,
    _dir: tempfile::TempDir,
    trace: std::path::PathBuf,
}

impl Traced {
    fn start(calls: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Traced {
        let found = std::process::Command::new("strace")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "strace is required for this test (scripts/test.sh installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("trace");
        let trace_arg = trace.to_str().unwrap().to_string();
        let calls = format!("trace={calls}");
        let reg = Registry::start_under(
            &[
                "strace",
                "-f",
                "-y",
                "-qq",
                "-e",
                calls.as_str(),
                "-o",
                trace_arg.as_str(),
            ],
            edit,
        );
        Traced {
            reg,
            _dir: dir,
            trace,
        }
    }

    /// Stop the server; its registry (for its data) and the trace.
    fn finish(mut self) -> (Registry, String) {
        // The traced server is strace's child: end it, and strace with it.
        let killed = std::process::Command::new("pkill")
            .args(["-KILL", "-P", &self.reg.pid().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        self.reg.stop();
        let log = std::fs::read_to_string(&self.trace).unwrap();
        (self.reg, log)
    }
}

/// Whether a trace line is an fsync or fdatasync of the file or directory at `path`.
fn syncs(line: &str, path: &str) -> bool {
    (line.contains("fsync(") || line.contains("fdatasync(")) && line.contains(&format!("<{path}>"))
}

#[test]
fn with_commit_new_directories_deletes_and_links_are_synced() {
    let traced = Traced::start(
        "mkdir,mkdirat,fsync,fdatasync,unlink,unlinkat,link,linkat",
        |cfg| {
            cfg["storage"]["commit"] = true.into();
            cfg["storage"]["gcInterval"] = "24h".into();
        },
    );
    let reg = &traced.reg;
    reg.push_image("brand/new/repo", "v1", "synced");
    let extra = reg.push_blob("brand/new/repo", b"to be deleted");
    assert_eq!(
        reg.delete(&format!("/v2/brand/new/repo/blobs/{extra}"))
            .status,
        202
    );
    // A mount links the layer into another new repository.
    let layer = sha256(b"layer of synced");
    assert_eq!(
        reg.mount("other/repo", &layer, "brand/new/repo").status,
        201
    );
    let (reg, log) = traced.finish();
    let root = reg.root().canonicalize().unwrap();
    let root_s = root.to_str().unwrap();
    let data_dir = root.parent().unwrap().to_path_buf();
    let data_s = data_dir.to_str().unwrap();
    // (position in the log, path) of each kind of call.
    let calls = |names: &[&str]| -> Vec<(usize, String)> {
        log.lines()
            .enumerate()
            .filter_map(|(i, l)| {
                // Calls that failed (EEXIST, ENOENT) changed nothing.
                if l.contains(" = -1 ") {
                    return None;
                }
                let call = l.split_whitespace().nth(1)?;
                let name = call.split('(').next()?;
                if !names.contains(&name) {
                    return None;
                }
                // The path: the first quoted string, or the <path> of an fd.
                let path = match l.split('"').nth(1) {
                    Some(p) => p.to_string(),
                    None => l.split('<').nth(1)?.split('>').next()?.to_string(),
                };
                Some((i, path))
            })
            // Under the data directory (the root's own entry is there).
            .filter(|(_, p)| p.starts_with(data_s))
            .collect()
    };
    let syncs = calls(&["fsync", "fdatasync"]);
    let synced_after =
        |at: usize, dir: &Path| syncs.iter().any(|(i, p)| *i > at && Path::new(p) == dir);
    let mkdirs = calls(&["mkdir", "mkdirat"]);
    assert!(
        mkdirs.iter().any(|(_, p)| p.ends_with("brand")),
        "no mkdir traced:\n{log}"
    );
    for (at, dir) in &mkdirs {
        let parent = Path::new(dir).parent().unwrap();
        assert!(
            synced_after(*at, parent),
            "new directory {dir} not synced into {}",
            parent.display()
        );
    }
    let unlinks: Vec<_> = calls(&["unlink", "unlinkat"])
        .into_iter()
        .filter(|(_, p)| p.contains(&hex_of(&extra).to_string()))
        .collect();
    assert!(!unlinks.is_empty(), "the delete was not traced");
    for (at, path) in &unlinks {
        assert!(
            synced_after(*at, Path::new(path).parent().unwrap()),
            "delete of {path} not synced"
        );
    }
    // The mounted layer: its file synced, and its new name synced into its directory.
    let mounted = root.join("other/repo/blobs/sha256").join(hex_of(&layer));
    let links: Vec<_> = calls(&["link", "linkat"])
        .into_iter()
        .filter(|(_, p)| p.starts_with(root_s))
        .collect();
    assert!(!links.is_empty(), "no link traced");
    let link_at = log
        .lines()
        .position(|l| l.contains("link") && l.contains(mounted.to_str().unwrap()))
        .unwrap_or_else(|| panic!("no link to {}\n{log}", mounted.display()));
    assert!(
        synced_after(link_at, mounted.parent().unwrap()),
        "the mount's name is not synced"
    );
}

#[test]
fn after_an_unclean_stop_blobs_that_lost_their_bytes_are_removed() {
    // commit: false (the default): published blobs may be unsynced.
    let mut reg = Registry::start();
    reg.push_image("crash/app", "v1", "power cut");
    let root = reg.root();
    assert_eq!(running_markers(&root), 1);
    reg.stop(); // SIGKILL: no clean stop.
                // What a power cut can leave of a blob whose data was never synced.
    let layer = b"layer of power cut".to_vec();
    let d = sha256(&layer);
    std::fs::write(blob_path(&root, "crash/app", &d), b"").unwrap();

    let reg =
        Registry::start_with(|cfg| cfg["storage"]["rootDirectory"] = root.to_str().unwrap().into());
    // The crashed run's marker is gone; the new run has its own.
    assert_eq!(running_markers(&root), 1);
    let gone = eventually(Duration::from_secs(60), || {
        reg.head(&format!("/v2/crash/app/blobs/{d}")).status == 404
    });
    assert!(gone, "the emptied blob is still served");
    // The other blobs were intact and stay; a push restores the layer.
    assert_eq!(reg.get_manifest("crash/app", "v1").status, 200);
    reg.push_blob("crash/app", &layer);
    assert_eq!(reg.pull_blob("crash/app", &d), layer);
}

#[test]
fn a_clean_stop_leaves_nothing_to_check() {
    let mut reg = Registry::start();
    reg.push_image("clean/app", "v1", "orderly");
    let root = reg.root();
    reg.signal(libc::SIGTERM);
    let status = reg.wait_exit(Duration::from_secs(60)).expect("exited");
    assert!(status.success(), "{status:?}");
    assert_eq!(running_markers(&root), 0);
}

/// The markers of servers running (or crashed) on a store.
fn running_markers(root: &Path) -> usize {
    names_in(root)
        .iter()
        .filter(|n| n.starts_with(".skiff-running."))
        .count()
}

#[test]
fn small_objects_are_synced_before_they_replace_anything() {
    // Without commit, index.json is still synced before its rename, so a
    // power cut cannot leave it empty.
    let traced = Traced::start("fsync,fdatasync,rename,renameat,renameat2", |_| {});
    let reg = &traced.reg;
    reg.push_image("meta/app", "v1", "synced metadata");
    reg.push_image("meta/app", "v2", "synced metadata too");
    let (reg, log) = traced.finish();
    let index = reg
        .root()
        .canonicalize()
        .unwrap()
        .join("meta/app/index.json");
    let renames: Vec<(usize, String)> = log
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            l.contains("rename")
                && !l.contains(" = -1 ")
                && l.contains(&format!("\"{}\"", index.display()))
        })
        .map(|(i, l)| (i, l.split('"').nth(1).unwrap_or_default().to_string()))
        .collect();
    assert!(
        renames.len() >= 2,
        "index.json was not replaced by rename:\n{log}"
    );
    for (at, tmp) in &renames {
        let synced = log.lines().take(*at).any(|l| syncs(l, tmp));
        assert!(synced, "{tmp} was renamed over index.json unsynced");
    }
}

#[test]
fn a_corrupt_index_json_is_rebuilt_by_scrub_repair() {
    let reg = Registry::start();
    let (child, cd) = reg.push_image("lost/app", "amd64", "child");
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": cd, "size": child.len()}],
    });
    let ib = serde_json::to_vec(&index).unwrap();
    assert_eq!(
        reg.put_manifest("lost/app", "latest", OCI_INDEX, &ib)
            .status,
        201
    );
    let path = reg.root().join("lost/app/index.json");
    std::fs::write(&path, b"{\"schemaVersion\":2,\"manifests\":[{\"dig").unwrap();

    let (ok, text) = run(&reg.config_path(), &["scrub"]);
    assert!(!ok, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("index.json") && l.contains("affected")),
        "{text}"
    );
    let (ok, text) = run(&reg.config_path(), &["scrub", "--repair"]);
    assert!(!ok, "{text}");
    // The top manifest (the index) is tagged again; its child is reached through it.
    let tag = format!("recovered-{}", &hex_of(&sha256(&ib))[..12]);
    assert!(text.contains(&tag), "{text}");
    let r = reg
        .req("GET", &format!("/v2/lost/app/manifests/{tag}"))
        .header("Accept", OCI_INDEX)
        .send();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, ib);
    assert_eq!(reg.get_manifest("lost/app", &cd).status, 200);
    // The child's own tag comes back from the version before the last push.
    let tags = reg.get("/v2/lost/app/tags/list").json();
    assert_eq!(tags["tags"], serde_json::json!(["amd64", tag]));
    // The corrupt file is kept aside.
    assert!(names_in(&reg.root().join("lost/app"))
        .iter()
        .any(|n| n.starts_with(".index.json.corrupt-")));
    let (ok, text) = run(&reg.config_path(), &["scrub"]);
    assert!(ok, "{text}");
}

#[test]
fn a_corrupt_index_json_gets_its_previous_tags_back() {
    let reg = Registry::start();
    reg.push_image("prev/app", "v1", "first");
    reg.push_image("prev/app", "v2", "second");
    let (_, d3) = reg.push_image("prev/app", "v3", "third");
    // The disk kept the version before the last change (v1 and v2 tagged).
    let prev = reg.root().join("prev/app/.index.json.prev");
    assert!(read_json(&prev)["manifests"].as_array().unwrap().len() == 2);
    std::fs::write(reg.root().join("prev/app/index.json"), b"\0\0\0\0").unwrap();
    let (ok, text) = run(&reg.config_path(), &["scrub", "--repair"]);
    assert!(!ok, "{text}");
    let tags = reg.get("/v2/prev/app/tags/list").json();
    let recovered = format!("recovered-{}", &hex_of(&d3)[..12]);
    assert_eq!(
        tags["tags"],
        serde_json::json!([recovered, "v1", "v2"]),
        "{text}"
    );
}

#[test]
fn with_commit_convergence_syncs_each_replacement_before_and_after_its_rename() {
    // Copies made with dedupe off become links when it is turned on; with
    // commit each replacement is synced before it takes the name, and the
    // directory after.
    let mut first = Registry::start_with(|cfg| {
        cfg["storage"]["dedupe"] = false.into();
        cfg["storage"]["commit"] = true.into();
    });
    let blob = vec![7u8; 1 << 20];
    let d = first.push_blob("copies/a", &blob);
    first.push_blob("copies/b", &blob);
    first.stop();
    let root = first.root();
    let traced = Traced::start("fsync,fdatasync,rename,renameat,renameat2", |cfg| {
        cfg["storage"]["rootDirectory"] = root.to_str().unwrap().into();
        cfg["storage"]["commit"] = true.into();
    });
    let ino = |repo: &str| {
        std::fs::metadata(blob_path(&root, repo, &d))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
    };
    assert!(eventually(Duration::from_secs(60), || ino("copies/a")
        .is_some()
        && ino("copies/a") == ino("copies/b")));
    let (_reg, log) = traced.finish();
    let root = root.canonicalize().unwrap();
    let renames: Vec<(usize, String, String)> = log
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            l.contains("rename")
                && !l.contains(" = -1 ")
                && l.contains(".tmp-")
                && l.contains("/blobs/sha256/")
        })
        .map(|(i, l)| {
            let mut q = l.split('"');
            let from = q.nth(1).unwrap_or_default().to_string();
            let to = q.nth(1).unwrap_or_default().to_string();
            (i, from, to)
        })
        .collect();
    assert_eq!(renames.len(), 1, "one copy replaced by a link:\n{log}");
    let (at, from, to) = &renames[0];
    assert!(
        to.starts_with(root.to_str().unwrap()) && to.ends_with(hex_of(&d)),
        "{to}"
    );
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines[..*at].iter().any(|l| syncs(l, from)),
        "{from} renamed unsynced"
    );
    let dir = Path::new(to)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        lines[*at..].iter().any(|l| syncs(l, &dir)),
        "{dir} not synced after the rename"
    );
}

#[test]
fn an_emptied_repository_with_a_write_in_flight_waits_for_it() {
    let reg = Registry::start_with(|cfg| {
        cfg["storage"]["gcDelay"] = "1h".into();
        cfg["storage"]["gcInterval"] = "24h".into();
        cfg["storage"]["retention"]["delay"] = "1h".into();
    });
    let (_, d) = reg.push_image("gone/app", "v1", "leaving");
    assert_eq!(
        reg.delete(&format!("/v2/gone/app/manifests/{d}")).status,
        202
    );
    let repo = reg.root().join("gone/app");
    age_files_under(&repo, LONG_AGO);
    // A write in flight (young) when gc finds the repository empty.
    let tmp = repo.join(".tmp-00000000cafef00d-index.json");
    std::fs::write(&tmp, b"{").unwrap();
    let (ok, text) = run(&reg.config_path(), &["gc"]);
    assert!(ok, "{text}");
    assert!(
        repo.join("index.json").exists(),
        "removed under a write in flight:\n{text}"
    );
    // Once old, the temp file goes, and the repository with it.
    age_file(&tmp, LONG_AGO);
    let (ok, text) = run(&reg.config_path(), &["gc"]);
    assert!(ok, "{text}");
    assert!(
        !reg.root().join("gone").exists(),
        "left: {:?}\n{text}",
        files_under(&reg.root().join("gone"))
    );
}
