//! One keep-alive HTTP/1.1 connection per worker, and the registry calls
//! the workloads make with it. A connection the server closed (after an
//! error answer, say) is opened again on the next request.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use tokio::net::TcpStream;

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A request body: boxed so fixed bytes and generated streams share a type.
pub type ReqBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// What came back: the status, the `Location` the uploads follow, and how
/// many body bytes were drained.
pub struct Answer {
    pub status: StatusCode,
    pub location: Option<String>,
    pub bytes: u64,
}

pub struct Conn {
    addr: SocketAddr,
    host: String,
    sender: Option<SendRequest<ReqBody>>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            host: addr.to_string(),
            sender: None,
        }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<ReqBody>> {
        let open = match &self.sender {
            Some(s) => !s.is_closed(),
            None => false,
        };
        if !open {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            stream.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("just opened");
        sender.ready().await?;
        Ok(sender)
    }

    /// Send a request; the answer's body is drained and counted.
    pub async fn send(
        &mut self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: ReqBody,
    ) -> Result<Answer> {
        let mut req = Request::builder()
            .method(method)
            .uri(target)
            .header("host", &self.host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body)?;
        let sender = self.sender().await?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e.into());
            }
        };
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let close = resp
            .headers()
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let bytes = drain(resp.into_body()).await?;
        if close {
            self.sender = None;
        }
        Ok(Answer {
            status,
            location,
            bytes,
        })
    }

    pub async fn get(&mut self, target: &str, accept: Option<&str>) -> Result<Answer> {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        self.send(Method::GET, target, &headers, empty()).await
    }

    pub async fn head(&mut self, target: &str, accept: &str) -> Result<Answer> {
        self.send(Method::HEAD, target, &[("accept", accept)], empty())
            .await
    }

    /// Start an upload; the `Location` to continue it at, as a request target.
    async fn start_upload(&mut self, repo: &str) -> Result<String> {
        let a = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[("content-length", "0")],
                empty(),
            )
            .await?;
        expect(&a, StatusCode::ACCEPTED, "starting an upload")?;
        let location = a.location.ok_or_else(|| anyhow!("no Location"))?;
        Ok(target_of(&location))
    }

    /// Push `blob` the way `how` says; the digest is the blob's.
    pub async fn push_blob(&mut self, repo: &str, blob: &Blob, how: Push) -> Result<()> {
        let mut at = self.start_upload(repo).await?;
        match how {
            Push::Monolithic => {}
            Push::Streamed => {
                // One PATCH, no Content-Length: chunked transfer encoding.
                let a = self
                    .send(
                        Method::PATCH,
                        &at,
                        &[("content-type", "application/octet-stream")],
                        blob.body(0, blob.size, false),
                    )
                    .await?;
                expect(&a, StatusCode::ACCEPTED, "a streamed PATCH")?;
                at = target_of(&a.location.ok_or_else(|| anyhow!("no Location"))?);
            }
            Push::Chunked(chunk) => {
                let mut from = 0;
                while from < blob.size {
                    let to = (from + chunk).min(blob.size);
                    let range = format!("{}-{}", from, to - 1);
                    let len = (to - from).to_string();
                    let a = self
                        .send(
                            Method::PATCH,
                            &at,
                            &[
                                ("content-type", "application/octet-stream"),
                                ("content-range", &range),
                                ("content-length", &len),
                            ],
                            blob.body(from, to, true),
                        )
                        .await?;
                    expect(&a, StatusCode::ACCEPTED, "a chunk's PATCH")?;
                    at = target_of(&a.location.ok_or_else(|| anyhow!("no Location"))?);
                    from = to;
                }
            }
        }
        let sep = if at.contains('?') { '&' } else { '?' };
        let target = format!("{at}{sep}digest={}", blob.digest);
        let a = if how == Push::Monolithic {
            let len = blob.size.to_string();
            self.send(
                Method::PUT,
                &target,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-length", &len),
                ],
                blob.body(0, blob.size, true),
            )
            .await?
        } else {
            self.send(Method::PUT, &target, &[("content-length", "0")], empty())
                .await?
        };
        expect(&a, StatusCode::CREATED, "finishing an upload")
    }

    pub async fn put_manifest(
        &mut self,
        repo: &str,
        reference: &str,
        manifest: &Bytes,
    ) -> Result<()> {
        let len = manifest.len().to_string();
        let a = self
            .send(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("content-type", MANIFEST), ("content-length", &len)],
                full(manifest.clone()),
            )
            .await?;
        expect(&a, StatusCode::CREATED, "a manifest PUT")
    }

    /// Mount `digest` from `from` into `repo`.
    pub async fn mount(&mut self, repo: &str, digest: &str, from: &str) -> Result<()> {
        let a = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
                &[("content-length", "0")],
                empty(),
            )
            .await?;
        expect(&a, StatusCode::CREATED, "a mount")
    }
}

/// How a blob goes up: POST then PUT with the body; POST, one streamed
/// PATCH, PUT; or POST, PATCHes of this many bytes, PUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    Monolithic,
    Streamed,
    Chunked(u64),
}

fn expect(a: &Answer, want: StatusCode, what: &str) -> Result<()> {
    if a.status != want {
        bail!("{what}: {} (wanted {want})", a.status);
    }
    Ok(())
}

/// A `Location` (absolute or not) as the request target to send next.
fn target_of(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/".into(), |i| rest[i..].to_string()),
        None => location.to_string(),
    }
}

async fn drain(mut body: Incoming) -> Result<u64> {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

pub fn empty() -> ReqBody {
    Empty::new().boxed()
}

pub fn full(b: Bytes) -> ReqBody {
    Full::new(b).boxed()
}

/// Blob content made on the fly: one random block repeated, the first 16
/// bytes made unique, so a 1 GiB blob costs one block of memory and every
/// blob has its own digest (no registry may skip the bytes as known).
#[derive(Clone)]
pub struct Blob {
    pub size: u64,
    pub digest: String,
    first: Bytes,
    block: Bytes,
}

const BLOCK: usize = 1 << 20;

impl Blob {
    pub fn new(size: u64, block: &Bytes, unique: u128) -> Blob {
        let mut first = block.to_vec();
        first[..16].copy_from_slice(&unique.to_le_bytes());
        let first = Bytes::from(first);
        let mut blob = Blob {
            size,
            digest: String::new(),
            first,
            block: block.clone(),
        };
        let mut h = Sha256::new();
        for piece in blob.pieces(0, size) {
            h.update(&piece);
        }
        blob.digest = format!("sha256:{}", hex::encode(h.finalize()));
        blob
    }

    /// A random block for [`Blob::new`].
    pub fn block() -> Bytes {
        let mut b = vec![0u8; BLOCK];
        rand::Rng::fill(&mut rand::rng(), &mut b[..]);
        Bytes::from(b)
    }

    /// The blob's bytes `from..to`, as slices of the two blocks.
    fn pieces(&self, from: u64, to: u64) -> impl Iterator<Item = Bytes> + '_ {
        let bs = BLOCK as u64;
        let mut at = from;
        std::iter::from_fn(move || {
            if at >= to {
                return None;
            }
            let i = at / bs;
            let off = (at % bs) as usize;
            let end = ((i + 1) * bs).min(to);
            let len = (end - at) as usize;
            let src = if i == 0 { &self.first } else { &self.block };
            at = end;
            Some(src.slice(off..off + len))
        })
    }

    /// A request body of bytes `from..to`; `sized` gives it a known length
    /// (so hyper sends Content-Length), else it is streamed chunked.
    pub fn body(&self, from: u64, to: u64, sized: bool) -> ReqBody {
        let pieces: Vec<Bytes> = self.pieces(from, to).collect();
        Pieces {
            pieces: pieces.into_iter(),
            left: to - from,
            sized,
        }
        .boxed()
    }
}

struct Pieces {
    pieces: std::vec::IntoIter<Bytes>,
    left: u64,
    sized: bool,
}

impl Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.pieces.next() {
            Some(p) => {
                self.left -= p.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(p))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.sized {
            hyper::body::SizeHint::with_exact(self.left)
        } else {
            hyper::body::SizeHint::default()
        }
    }
}

/// A small image for the manifest workloads: a config and a layer pushed
/// into `repo`, and the manifest naming them (its bytes and digest).
#[derive(Clone)]
pub struct Image {
    pub manifest: Bytes,
    pub digest: String,
    pub config: Blob,
    pub layer: Blob,
}

impl Image {
    pub async fn push(conn: &mut Conn, repo: &str, block: &Bytes, unique: u128) -> Result<Image> {
        let config = Blob::new(1024, block, unique << 1);
        let layer = Blob::new(64 * 1024, block, (unique << 1) | 1);
        conn.push_blob(repo, &config, Push::Monolithic).await?;
        conn.push_blob(repo, &layer, Push::Monolithic).await?;
        let manifest = Image::manifest_for(&config, &layer);
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
        Ok(Image {
            manifest,
            digest,
            config,
            layer,
        })
    }

    fn manifest_for(config: &Blob, layer: &Blob) -> Bytes {
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.digest, "size": config.size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer.digest, "size": layer.size}],
        });
        Bytes::from(serde_json::to_vec(&m).expect("json"))
    }
}
