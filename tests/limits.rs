//! Slow and stalled clients: they may use up their share of the registry,
//! and get clean answers (503 with Retry-After, 408) past it, but never take
//! it down for everyone else. Waits are bounded by generous limits; what is
//! asserted is who gets which status, never how long anything took.

mod common;
use common::*;
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What a stalled upload declares; it sends only a few bytes of it.
const DECLARED: usize = 1_000_000;
/// A body too big for the host to read before the request takes a slot (it
/// buffers up to 64 KiB), small enough for the kernel to take whole when a
/// turned-away client writes it all anyway.
const STREAMED: usize = 100_000;
/// Generous bound on any one wait for the server.
const PATIENCE: Duration = Duration::from_secs(60);

/// A request whose head and first few body bytes were sent, and whose body
/// then stalls; it reads whatever the server answers without blocking.
struct Stalled {
    stream: TcpStream,
    got: Vec<u8>,
    closed: bool,
}

fn stall(
    reg: &Registry,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    declared: usize,
    sent: &[u8],
) -> Stalled {
    let mut stream = TcpStream::connect(("127.0.0.1", reg.port)).expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {declared}\r\n",
        reg.host()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(sent).expect("send the first bytes");
    Stalled {
        stream,
        got: Vec::new(),
        closed: false,
    }
}

/// A stalled blob upload: the content type every client sends, then 3 bytes.
fn stall_upload(reg: &Registry, method: &str, path: &str) -> Stalled {
    stall(
        reg,
        method,
        path,
        &[("Content-Type", "application/octet-stream")],
        DECLARED,
        b"abc",
    )
}

impl Stalled {
    /// Take what has arrived; true once the server answered or closed.
    fn poll(&mut self) -> bool {
        if !self.done() {
            self.stream.set_nonblocking(true).expect("nonblocking");
            let mut buf = [0u8; 4096];
            loop {
                match self.stream.read(&mut buf) {
                    Ok(0) => self.closed = true,
                    Ok(n) => {
                        self.got.extend_from_slice(&buf[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => self.closed = true,
                }
                break;
            }
        }
        self.done()
    }

    fn done(&self) -> bool {
        self.closed || complete(&self.got)
    }

    /// The answer, waiting up to [`PATIENCE`] for it; `None` if the
    /// connection stayed open and silent.
    fn answer(mut self) -> Option<Resp> {
        self.stream.set_nonblocking(false).expect("blocking");
        self.stream
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        let mut buf = [0u8; 4096];
        while !self.done() {
            match self.stream.read(&mut buf) {
                Ok(0) => self.closed = true,
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(_) => self.closed = true,
            }
        }
        Some(self.response())
    }

    fn response(&self) -> Resp {
        if self.got.is_empty() {
            panic!("the server closed the connection without an answer");
        }
        Resp::parse(&self.got, false)
    }
}

fn metrics(reg: &Registry) -> String {
    let r = reg.get("/metrics");
    assert_eq!(r.status, 200, "/metrics: {}", r.text());
    r.text()
}

fn gauge(reg: &Registry, name: &str) -> Option<u64> {
    metric(&metrics(reg), name)
}

#[test]
fn five_hundred_stalled_uploads_leave_the_registry_serving() {
    // With the default limits (256 requests in flight, a quarter of them kept
    // for requests without a streamed body), 192 uploads hold a slot each and
    // the other 308 are turned away.
    const STALLED: usize = 500;
    const ADMITTED: usize = 192;
    // Long enough that no stalled body times out while the test runs.
    let reg = Registry::start_with(|c| c["http"]["bodyTimeout"] = json!("10m"));
    let digest = sha256(&vec![7u8; DECLARED]);
    let path = format!("/v2/x/blobs/uploads/?digest={digest}");
    let mut stalled: Vec<Stalled> = (0..STALLED)
        .map(|_| stall_upload(&reg, "POST", &path))
        .collect();
    let settled = eventually(PATIENCE, || {
        stalled
            .iter_mut()
            .map(|s| s.poll())
            .filter(|&done| done)
            .count()
            == STALLED - ADMITTED
    });

    // While the uploads stall, everything that needs no streamed body works.
    let r = reg.get("/v2/");
    assert_eq!(r.status, 200, "GET /v2/ while uploads stall: {}", r.text());
    let (manifest, _) = reg.push_image("y", "v1", "pushed while uploads stall");
    let r = reg.get_manifest("y", "v1");
    assert_eq!(r.status, 200, "pull while uploads stall: {}", r.text());
    assert_eq!(r.body, manifest);
    let m = metrics(&reg);
    assert_eq!(metric(&m, "skiff_uploads_in_flight"), Some(ADMITTED as u64));
    // One more streamed upload is over the uploads' share.
    let more = vec![1u8; STREAMED];
    let r = reg
        .req(
            "POST",
            &format!("/v2/y/blobs/uploads/?digest={}", sha256(&more)),
        )
        .header("Content-Type", "application/octet-stream")
        .body(&more)
        .send();
    assert_too_many("an upload past the uploads' share", &r);

    assert!(
        settled,
        "{} of {STALLED} stalled uploads were answered, expected {}",
        stalled.iter().filter(|s| s.done()).count(),
        STALLED - ADMITTED
    );
    for s in stalled.iter().filter(|s| s.done()) {
        assert_too_many("a stalled upload past the share", &s.response());
    }
    let m = metrics(&reg);
    assert_eq!(metric(&m, "skiff_uploads_in_flight"), Some(ADMITTED as u64));
    assert_eq!(
        metric(&m, "skiff_requests_rejected_total"),
        Some((STALLED - ADMITTED + 1) as u64)
    );

    // Once the stalled clients go away, uploads are taken again.
    drop(stalled);
    assert!(
        eventually(PATIENCE, || gauge(&reg, "skiff_uploads_in_flight")
            == Some(0)),
        "the stalled uploads' slots were not given back"
    );
    let r = reg
        .req(
            "POST",
            &format!("/v2/y/blobs/uploads/?digest={}", sha256(&more)),
        )
        .header("Content-Type", "application/octet-stream")
        .body(&more)
        .send();
    assert_eq!(r.status, 201, "upload after the stall: {}", r.text());
    assert_eq!(reg.head(&format!("/v2/x/blobs/{digest}")).status, 404);
}

#[test]
fn stalled_bodies_time_out_and_publish_nothing() {
    let reg = Registry::start_with(|c| c["http"]["bodyTimeout"] = json!("2s"));
    let digest = sha256(&vec![7u8; DECLARED]);
    let closing = reg.open_upload("x").location();
    let patched = reg.open_upload("x").location();
    let manifest = image_manifest(&digest, DECLARED, &[], None, None);
    let stalls = [
        (
            "monolithic POST",
            stall_upload(
                &reg,
                "POST",
                &format!("/v2/x/blobs/uploads/?digest={digest}"),
            ),
        ),
        (
            "closing PUT",
            stall_upload(
                &reg,
                "PUT",
                &with_query(&closing, &format!("digest={digest}")),
            ),
        ),
        ("PATCH", stall_upload(&reg, "PATCH", &patched)),
        (
            "manifest PUT",
            stall(
                &reg,
                "PUT",
                "/v2/x/manifests/v1",
                &[("Content-Type", OCI_MANIFEST)],
                manifest.len(),
                &manifest[..10],
            ),
        ),
    ];
    for (what, s) in stalls {
        let r = s
            .answer()
            .unwrap_or_else(|| panic!("{what}: the stalled request was never answered"));
        assert_eq!(r.status, 408, "{what}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{what}");
    }
    assert_eq!(
        metric(&metrics(&reg), "skiff_request_body_timeouts_total"),
        Some(4)
    );
    // Nothing half-sent was published.
    assert_eq!(reg.head(&format!("/v2/x/blobs/{digest}")).status, 404);
    assert_eq!(reg.get_manifest("x", "v1").status, 404);
    // And the registry still takes the whole blob from a client that sends it.
    assert_eq!(reg.push_blob("x", &vec![7u8; DECLARED]), digest);
    assert_eq!(reg.head(&format!("/v2/x/blobs/{digest}")).status, 200);
}

#[test]
fn slow_request_heads_are_cut_off() {
    let reg = Registry::start_with(|c| c["http"]["headerTimeout"] = json!("1s"));
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", reg.port)).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s
    };
    let silent = connect();
    let mut partial = connect();
    partial
        .write_all(format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\n", reg.host()).as_bytes())
        .unwrap();
    let mut idle = connect();
    idle.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\n\r\n", reg.host()).as_bytes())
        .unwrap();
    for (what, mut s) in [("silent", silent), ("partial head", partial)] {
        let mut raw = Vec::new();
        let r = s.read_to_end(&mut raw);
        assert!(r.is_ok(), "{what}: the connection was not closed: {r:?}");
        assert!(
            raw.is_empty(),
            "{what}: {:?}",
            String::from_utf8_lossy(&raw)
        );
    }
    // A kept-alive connection gets its answer, then is closed once idle.
    let mut raw = Vec::new();
    let r = idle.read_to_end(&mut raw);
    assert!(
        r.is_ok(),
        "idle keep-alive: the connection was not closed: {r:?}"
    );
    assert_eq!(Resp::parse(&raw, false).status, 200);
}

#[test]
fn requests_over_the_in_flight_cap_get_503_then_recover() {
    // 4 slots: 3 for requests with a streamed body, 1 kept for the rest.
    let reg = Registry::start_with(|c| {
        c["http"]["maxRequestsInFlight"] = json!(4);
        c["http"]["bodyTimeout"] = json!("10m");
    });
    // Big enough that a client that does not read it holds its slot.
    let big: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    let big_digest = reg.push_blob("x", &big);
    let digest = sha256(&vec![7u8; DECLARED]);
    let path = format!("/v2/x/blobs/uploads/?digest={digest}");

    let uploads: Vec<Stalled> = (0..3).map(|_| stall_upload(&reg, "POST", &path)).collect();
    assert!(
        eventually(PATIENCE, || gauge(&reg, "skiff_uploads_in_flight")
            == Some(3)),
        "the three stalled uploads did not all take a slot"
    );
    let fourth = stall_upload(&reg, "POST", &path)
        .answer()
        .expect("the fourth upload was never answered");
    assert_too_many("a fourth stalled upload", &fourth);
    let r = reg.get("/v2/");
    assert_eq!(r.status, 200, "GET /v2/ in the kept slot: {}", r.text());

    // A download whose client does not read fills the last slot.
    let mut download = TcpStream::connect(("127.0.0.1", reg.port)).expect("connect");
    download
        .write_all(
            format!(
                "GET /v2/x/blobs/{big_digest} HTTP/1.1\r\nHost: {}\r\n\r\n",
                reg.host()
            )
            .as_bytes(),
        )
        .unwrap();
    assert!(
        eventually(PATIENCE, || gauge(&reg, "skiff_requests_in_flight")
            == Some(4)),
        "the unread download did not hold a slot"
    );
    assert_too_many("GET /v2/ with every slot taken", &reg.get("/v2/"));
    assert_eq!(
        metric(&metrics(&reg), "skiff_requests_rejected_total"),
        Some(2)
    );

    // When the stalled clients go away, requests succeed again.
    drop(uploads);
    drop(download);
    assert!(
        eventually(PATIENCE, || gauge(&reg, "skiff_requests_in_flight")
            == Some(0)),
        "slots were not given back"
    );
    assert_eq!(reg.get("/v2/").status, 200);
    let small = vec![3u8; STREAMED];
    reg.push_blob("x", &small);
    reg.pull_blob("x", &big_digest);
}

#[test]
fn a_slow_large_upload_is_not_charged_for_waiting() {
    // The budget counts time the registry component runs. A 200 MB upload
    // paced to take several times the budget must still succeed: the
    // component waits in the host's copy, which is not its own execution.
    const SIZE: usize = 200 << 20;
    const PIECE: usize = 4 << 20;
    let reg = Registry::start_with(|c| c["http"]["requestCpuBudget"] = json!("1s"));
    let blob: Vec<u8> = (0..SIZE as u32).map(|i| (i % 253) as u8).collect();
    let digest = sha256(&blob);
    let mut s = TcpStream::connect(("127.0.0.1", reg.port)).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(
        format!(
            "POST /v2/big/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {SIZE}\r\n\
             Connection: close\r\n\r\n",
            reg.host()
        )
        .as_bytes(),
    )
    .unwrap();
    // Pacing, not a check: 50 pieces 80 ms apart make the upload last
    // at least 4 s of wall time, four times the budget.
    for piece in blob.chunks(PIECE) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(80));
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let r = Resp::parse(&raw, false);
    assert_eq!(r.status, 201, "paced upload: {}", r.text());
    let r = reg.head(&format!("/v2/big/blobs/{digest}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(SIZE.to_string().as_str()));
}

/// `http.ratelimit`: traffic within the rate never sees a 429; a burst
/// above it does, with `Retry-After`, and a method's own rate applies to it.
#[test]
fn a_burst_over_the_rate_limit_gets_429_and_traffic_within_it_never_does() {
    let reg = Registry::start_with(|cfg| {
        cfg["http"]["ratelimit"] = serde_json::json!({
            "rate": 20, "methods": [{"method": "DELETE", "rate": 2}]
        })
    });
    // Within: 10 a second for 3 s, against 20 a second.
    let start = std::time::Instant::now();
    for i in 0..30u32 {
        let due = start + Duration::from_millis(100) * i;
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        let r = reg.get("/v2/");
        assert_eq!(r.status, 200, "request {i} within the rate: {}", r.text());
    }
    // A burst: 60 at once, after the bucket had time to fill again.
    std::thread::sleep(Duration::from_millis(1100));
    let statuses: Vec<Resp> = (0..60).map(|_| reg.get("/v2/")).collect();
    let limited: Vec<&Resp> = statuses.iter().filter(|r| r.status == 429).collect();
    assert!(
        statuses[..20].iter().all(|r| r.status == 200),
        "the first 20 of a burst fit the bucket"
    );
    assert!(
        !limited.is_empty(),
        "60 requests at once against 20 a second: none limited"
    );
    for r in &limited {
        assert_eq!(r.error_code(), "TOOMANYREQUESTS");
        let after: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(after >= 1, "Retry-After {after}");
    }
    assert!(statuses.iter().all(|r| r.status == 200 || r.status == 429));
    // DELETE has 2 a second of its own (the manifest is unknown: 404 when let through).
    let deletes: Vec<u16> = (0..4)
        .map(|_| reg.delete("/v2/a/manifests/sha256:0000000000000000000000000000000000000000000000000000000000000000").status)
        .collect();
    assert_eq!(&deletes[..2], &[404, 404], "{deletes:?}");
    assert!(deletes[2..].contains(&429), "{deletes:?}");
}
