//! Where a test registry keeps its objects, and a view of them for checks:
//! files under its root directory, or, for the test targets whose name ends
//! in `_s3` (the same sources built again), a fresh bucket on the S3
//! endpoint the test command started (moto, `$SKIFF_TEST_S3_ENDPOINT`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Whether this test target runs its registries on S3.
pub const ON_S3: bool = {
    let name = env!("CARGO_CRATE_NAME").as_bytes();
    let n = name.len();
    n > 3 && name[n - 3] == b'_' && name[n - 2] == b's' && name[n - 1] == b'3'
};

/// The key prefix skiff is configured with inside each test bucket.
const PREFIX: &str = "skiff";

pub enum Backing {
    Disk(PathBuf),
    /// Shared by every registry started on the bucket.
    S3(std::sync::Arc<Bucket>),
}

pub struct Bucket {
    pub name: String,
    client: aws_sdk_s3::Client,
    rt: tokio::runtime::Runtime,
}

fn endpoint() -> String {
    std::env::var("SKIFF_TEST_S3_ENDPOINT")
        .expect("SKIFF_TEST_S3_ENDPOINT is not set: scripts/test.sh starts moto and sets it")
}

impl Bucket {
    /// A new, empty bucket.
    pub fn create() -> Bucket {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(endpoint())
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        let name = format!("skiff-test-{:016x}", rand::random::<u64>());
        rt.block_on(client.create_bucket().bucket(&name).send())
            .expect("creating a test bucket");
        Bucket { name, client, rt }
    }

    /// zot's `storageDriver` for this bucket.
    pub fn driver(&self) -> serde_json::Value {
        serde_json::json!({
            "name": "s3",
            "bucket": self.name,
            "rootdirectory": PREFIX,
            "region": "us-east-1",
            "regionendpoint": endpoint(),
            "forcepathstyle": true,
            "accesskey": "testing",
            "secretkey": "testing",
            "chunksize": "5MiB",
        })
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .rt
                .block_on(
                    self.client
                        .list_objects_v2()
                        .bucket(&self.name)
                        .prefix(prefix)
                        .set_continuation_token(token)
                        .send(),
                )
                .expect("listing the test bucket");
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(String::from)),
            );
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => return out,
            }
        }
    }

    /// Overwrite the object skiff keeps at `key` (a test damaging it).
    pub fn overwrite(&self, key: &str, bytes: &[u8]) {
        self.rt
            .block_on(
                self.client
                    .put_object()
                    .bucket(&self.name)
                    .key(format!("{PREFIX}/{key}"))
                    .body(bytes.to_vec().into())
                    .send(),
            )
            .expect("overwriting a test object");
    }

    fn read(&self, key: &str) -> Option<Vec<u8>> {
        let out = self
            .rt
            .block_on(self.client.get_object().bucket(&self.name).key(key).send())
            .ok()?;
        let bytes = self.rt.block_on(out.body.collect()).ok()?;
        Some(bytes.into_bytes().to_vec())
    }
}

impl Backing {
    /// Every stored object under `prefix` (a repository path, or "" for
    /// all), as paths relative to it.
    pub fn files(&self, prefix: &str) -> BTreeSet<String> {
        match self {
            Backing::Disk(root) => super::files_under(&join(root, prefix)),
            Backing::S3(b) => {
                let full = match prefix {
                    "" => format!("{PREFIX}/"),
                    p => format!("{PREFIX}/{}/", p.trim_end_matches('/')),
                };
                b.keys(&full)
                    .into_iter()
                    .filter_map(|k| k.strip_prefix(&full).map(String::from))
                    .collect()
            }
        }
    }

    /// The bytes of the object at `key`, if there is one.
    pub fn read(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            Backing::Disk(root) => std::fs::read(root.join(key)).ok(),
            Backing::S3(b) => b.read(&format!("{PREFIX}/{key}")),
        }
    }
}

fn join(root: &Path, prefix: &str) -> PathBuf {
    if prefix.is_empty() {
        root.to_path_buf()
    } else {
        root.join(prefix)
    }
}
