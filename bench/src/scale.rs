//! The scale mode: grow one repository to N tags and the registry to N
//! repositories, and at each N time the requests whose cost must not grow
//! with N (one client, so the figure is latency, not queueing).

use crate::client::{Conn, Image, MANIFEST};
use crate::servers::Server;
use crate::stats::Stats;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const REPO: &str = "scale/tags";
/// Requests timed per measure and N.
const SAMPLES: usize = 100;
/// Tag pushes timed per N: more than the tag entries that make a push into
/// a large skiff repository fold them all into its `index.json` (256), so
/// the mean carries its share of a fold.
const PUSH_SAMPLES: usize = 300;
/// Clients filling in parallel.
const FILLERS: usize = 4;

pub const MEASURES: [&str; 4] = [
    "manifest GET by tag",
    "tag push",
    "tags/list?n=100",
    "_catalog?n=100",
];

/// p50 latency (ms) of each of [`MEASURES`] at one N, and the mean of the
/// tag pushes.
pub struct Point {
    pub n: usize,
    pub p50_ms: [f64; 4],
    pub push_mean_ms: f64,
}

pub async fn run(
    server: &Server,
    sizes: &[usize],
    direct_above: usize,
    block: &Bytes,
) -> Result<Vec<Point>> {
    let addr = server.addr;
    let mut conn = Conn::new(addr);
    let image = Arc::new(Image::push(&mut conn, REPO, block, rand::random()).await?);
    conn.put_manifest(REPO, "latest", &image.manifest).await?;
    let (mut tags, mut repos) = (1usize, 0usize);
    let mut points = Vec::new();
    for &n in sizes {
        if n > direct_above {
            let written = Written::new(server, &image);
            written.tags(tags..n)?;
            written.repositories(repos..n)?;
        } else {
            fill(addr, &image, tags..n, add_tag).await?;
            fill(addr, &image, repos..n, add_repository).await?;
        }
        tags = tags.max(n);
        repos = repos.max(n);

        let mut p50 = [0.0; 4];
        let mut push_mean_ms = 0.0;
        for (m, slot) in p50.iter_mut().enumerate() {
            let mut stats = Stats::default();
            let samples = if m == 1 { PUSH_SAMPLES } else { SAMPLES };
            for k in 0..samples {
                let started = Instant::now();
                let bytes = once(&mut conn, &image, m, n, k).await?;
                stats.record(started.elapsed(), bytes);
            }
            if m == 1 {
                let total: u64 = stats.latencies_us.iter().sum();
                push_mean_ms = total as f64 / samples as f64 / 1000.0;
            }
            *slot = stats.summary().p50_ms;
        }
        // The tag pushes added PUSH_SAMPLES tags (named apart from the
        // fill's); they do not change N measurably.
        points.push(Point {
            n,
            p50_ms: p50,
            push_mean_ms,
        });
    }
    Ok(points)
}

/// One request of measure `m` (an index into [`MEASURES`]) at size `n`,
/// the `k`th of its samples; the bytes it read.
async fn once(conn: &mut Conn, image: &Image, m: usize, n: usize, k: usize) -> Result<u64> {
    let a = match m {
        // A tag from the middle of the list, so no end of it is favoured.
        0 => {
            let path = format!("/v2/{REPO}/manifests/t{:07}", n / 2);
            conn.get(&path, Some(MANIFEST)).await?
        }
        // Each push a new tag (moving an existing one costs the same).
        1 => {
            let tag = format!("p{n}-{k}");
            conn.put_manifest(REPO, &tag, &image.manifest).await?;
            return Ok(0);
        }
        2 => {
            conn.get(&format!("/v2/{REPO}/tags/list?n=100"), None)
                .await?
        }
        // A page from the middle of the catalog.
        _ => {
            let path = format!("/v2/_catalog?n=100&last=scale/r{:07}", n / 2);
            conn.get(&path, None).await?
        }
    };
    if !a.status.is_success() {
        bail!("{}: {}", MEASURES[m], a.status);
    }
    Ok(a.bytes)
}

type Filling<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

fn add_tag<'a>(conn: &'a mut Conn, image: &'a Image, i: usize) -> Filling<'a> {
    Box::pin(async move {
        conn.put_manifest(REPO, &format!("t{i:07}"), &image.manifest)
            .await
    })
}

fn add_repository<'a>(conn: &'a mut Conn, image: &'a Image, i: usize) -> Filling<'a> {
    Box::pin(async move {
        let r = format!("scale/r{i:07}");
        conn.mount(&r, &image.config.digest, REPO).await?;
        conn.mount(&r, &image.layer.digest, REPO).await?;
        conn.put_manifest(&r, "latest", &image.manifest).await
    })
}

type Step = for<'a> fn(&'a mut Conn, &'a Image, usize) -> Filling<'a>;

/// Run `step` for every i in `range`, [`FILLERS`] clients at once.
async fn fill(
    addr: SocketAddr,
    image: &Arc<Image>,
    range: std::ops::Range<usize>,
    step: Step,
) -> Result<()> {
    if range.is_empty() {
        return Ok(());
    }
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let mut workers = Vec::new();
    for _ in 0..FILLERS {
        let (next, image) = (next.clone(), image.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>(());
                }
                step(&mut conn, &image, i).await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(())
}

/// Tags and repositories written straight into a registry's storage, in
/// the layout each one keeps: what the API would have left there.
struct Written<'a> {
    server: &'a Server,
    image: &'a Image,
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

impl<'a> Written<'a> {
    fn new(server: &'a Server, image: &'a Image) -> Self {
        Written { server, image }
    }

    fn is_skiff(&self) -> bool {
        self.server.name == "skiff"
    }

    /// distribution's repository directory.
    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.server
            .data
            .join("docker/registry/v2/repositories")
            .join(repo)
    }

    /// distribution's link files making `tag` name the image in `repo`.
    fn link_tag(&self, repo: &str, tag: &str) -> Result<()> {
        let d = &self.image.digest;
        let tag_dir = self.repo_dir(repo).join("_manifests/tags").join(tag);
        write(&tag_dir.join("current/link"), d.as_bytes())?;
        write(
            &tag_dir.join("index/sha256").join(hex(d)).join("link"),
            d.as_bytes(),
        )
    }

    fn tags(&self, range: std::ops::Range<usize>) -> Result<()> {
        if !self.is_skiff() {
            for i in range {
                self.link_tag(REPO, &format!("t{i:07}"))?;
            }
            return Ok(());
        }
        // One write of index.json with every new tag, as skiff keeps them.
        let path = self.server.data.join(REPO).join("index.json");
        let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let manifests = index["manifests"]
            .as_array_mut()
            .context("index.json has no manifests")?;
        let latest = manifests
            .iter()
            .find(|d| d["digest"] == self.image.digest.as_str())
            .context("index.json does not list the image")?
            .clone();
        for i in range {
            let mut d = latest.clone();
            d["annotations"]["org.opencontainers.image.ref.name"] = format!("t{i:07}").into();
            manifests.push(d);
        }
        write(&path, &serde_json::to_vec(&index)?)
    }

    fn repositories(&self, range: std::ops::Range<usize>) -> Result<()> {
        let image = self.image;
        let blobs = [
            image.digest.as_str(),
            image.config.digest.as_str(),
            image.layer.digest.as_str(),
        ];
        for i in range {
            let repo = format!("scale/r{i:07}");
            if self.is_skiff() {
                // Blobs hard-linked, as skiff's dedupe leaves them (copied
                // past the filesystem's limit of links to one file, as skiff
                // does too).
                let src = self.server.data.join(REPO).join("blobs/sha256");
                let dst = self.server.data.join(&repo);
                std::fs::create_dir_all(dst.join("blobs/sha256"))?;
                for d in blobs {
                    let (from, to) = (src.join(hex(d)), dst.join("blobs/sha256").join(hex(d)));
                    if std::fs::hard_link(&from, &to).is_err() {
                        std::fs::copy(&from, &to)?;
                    }
                }
                write(
                    &dst.join("oci-layout"),
                    br#"{"imageLayoutVersion":"1.0.0"}"#,
                )?;
                let index = serde_json::json!({
                    "schemaVersion": 2,
                    "manifests": [{
                        "mediaType": MANIFEST,
                        "digest": image.digest,
                        "size": image.manifest.len(),
                        "annotations": {"org.opencontainers.image.ref.name": "latest"},
                    }],
                });
                write(&dst.join("index.json"), &serde_json::to_vec(&index)?)?;
            } else {
                let dir = self.repo_dir(&repo);
                let d = &image.digest;
                write(
                    &dir.join("_manifests/revisions/sha256")
                        .join(hex(d))
                        .join("link"),
                    d.as_bytes(),
                )?;
                for b in &blobs[1..] {
                    write(
                        &dir.join("_layers/sha256").join(hex(b)).join("link"),
                        b.as_bytes(),
                    )?;
                }
                self.link_tag(&repo, "latest")?;
            }
        }
        if self.is_skiff() {
            // The catalog's index is rebuilt from the layouts on its next read.
            let _ = std::fs::remove_file(self.server.data.join(".skiff/catalog.json"));
        }
        Ok(())
    }
}

/// An SVG of p50 latency against N (log scale), a line per registry and
/// measure.
pub fn plot(path: &std::path::Path, runs: &[(&str, Vec<Point>)]) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let ns: Vec<usize> = runs
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.n))
        .collect();
    let (lo, hi) = (
        *ns.iter().min().unwrap_or(&1) as f64,
        *ns.iter().max().unwrap_or(&10) as f64,
    );
    let top = runs
        .iter()
        .flat_map(|(_, p)| p.iter().flat_map(|p| p.p50_ms))
        .fold(0.1f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "p50 latency against N (tags in the repository / repositories)",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((lo.max(1.0)..hi.max(lo + 1.0)).log_scale(), 0.0..top * 1.1)?;
    chart.configure_mesh().x_desc("N").y_desc("ms").draw()?;
    let colors = [
        RED,
        BLUE,
        GREEN,
        MAGENTA,
        CYAN,
        BLACK,
        RGBColor(200, 120, 0),
        RGBColor(120, 0, 200),
    ];
    let mut c = 0;
    for (name, points) in runs {
        for (m, measure) in MEASURES.iter().enumerate() {
            let color = colors[c % colors.len()];
            c += 1;
            let style = if *name == "skiff" {
                color.stroke_width(2)
            } else {
                color.stroke_width(1)
            };
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (p.n as f64, p.p50_ms[m])),
                    style,
                ))?
                .label(format!("{name}: {measure}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
