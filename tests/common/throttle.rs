//! A proxy in front of the S3 endpoint that answers some requests with
//! `503 SlowDown`, as S3 does when a prefix gets more requests than it
//! takes: skiff must back off and retry, never pass it on as a 500.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub struct Throttle {
    /// The endpoint to configure instead of the real one.
    pub endpoint: String,
    /// Requests answered with SlowDown so far.
    pub throttled: Arc<AtomicU64>,
    /// Requests passed on.
    pub passed: Arc<AtomicU64>,
    /// While set, every request is answered SlowDown.
    pub all: Arc<AtomicBool>,
}

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>\
<RequestId>throttle</RequestId></Error>";

impl Throttle {
    /// Pass requests to `upstream` (`http://host:port`), answering every
    /// `every`-th one with SlowDown instead. Runs until the test exits.
    pub fn start(upstream: &str, every: u64) -> Throttle {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let (throttled, passed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let seen = Arc::new(AtomicU64::new(0));
        let all = Arc::new(AtomicBool::new(false));
        let (t, p, a) = (throttled.clone(), passed.clone(), all.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (upstream, t, p, a, seen) = (
                    upstream.clone(),
                    t.clone(),
                    p.clone(),
                    a.clone(),
                    seen.clone(),
                );
                std::thread::spawn(move || {
                    let every = if a.load(Ordering::SeqCst) { 1 } else { every };
                    let _ = serve(conn, &upstream, every, &seen, &t, &p);
                });
            }
        });
        Throttle {
            endpoint,
            throttled,
            passed,
            all,
        }
    }
}

/// One request per connection: read it whole, then throttle it or relay
/// it to the upstream (with `Connection: close`) and its answer back.
fn serve(
    conn: TcpStream,
    upstream: &str,
    every: u64,
    seen: &AtomicU64,
    throttled: &AtomicU64,
    passed: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if !lower.starts_with("connection:") && !lower.starts_with("expect:") {
            head.extend_from_slice(line.as_bytes());
        }
    }
    let body = if chunked {
        read_chunked(&mut reader)?
    } else {
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        body
    };
    let mut conn = conn;
    if (seen.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(every) {
        throttled.fetch_add(1, Ordering::SeqCst);
        let answer = format!(
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{SLOW_DOWN}",
            SLOW_DOWN.len()
        );
        return conn.write_all(answer.as_bytes());
    }
    passed.fetch_add(1, Ordering::SeqCst);
    let is_head = head.starts_with(b"HEAD ");
    let mut up = TcpStream::connect(upstream)?;
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    up.write_all(&head)?;
    up.write_all(&body)?;
    // Relay exactly one response: the upstream may keep the connection
    // open whatever the request said.
    let mut up = BufReader::new(up);
    let mut answer = Vec::new();
    let (mut length, mut chunked, mut status) = (0usize, false, 0u16);
    loop {
        let mut line = String::new();
        if up.read_line(&mut line)? == 0 {
            break;
        }
        if status == 0 {
            status = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        answer.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    if !is_head && status != 204 && status != 304 {
        if chunked {
            answer.extend(read_chunked(&mut up)?);
        } else {
            let mut body = vec![0u8; length];
            up.read_exact(&mut body)?;
            answer.extend(body);
        }
    }
    conn.write_all(&answer)
}

/// A chunked body as sent, framing included (it is relayed as it came).
fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        raw.extend_from_slice(size_line.as_bytes());
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
            .unwrap_or(0);
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(raw);
                }
                raw.extend_from_slice(line.as_bytes());
                if line == "\r\n" {
                    return Ok(raw);
                }
            }
        }
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk)?;
        raw.extend_from_slice(&chunk);
    }
}
