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
pub(super) const PREFIX: &str = "skiff";

pub enum Backing {
    Disk(PathBuf),
    /// Shared by every registry started on the bucket.
    S3(std::sync::Arc<Bucket>),
    /// What objects-kv keeps through kv-fs in a directory (edge runs).
    Kv(super::KvView),
}

pub struct Bucket {
    pub name: String,
    client: aws_sdk_s3::Client,
    rt: tokio::runtime::Runtime,
}

pub(super) fn endpoint() -> String {
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
        self.objects(prefix).into_iter().map(|(k, _)| k).collect()
    }

    /// Bytes of every object in the bucket, whatever their prefix.
    pub fn bytes_stored(&self) -> u64 {
        self.objects("").iter().map(|(_, n)| n).sum()
    }

    /// Every object under `prefix` with its size.
    fn objects(&self, prefix: &str) -> Vec<(String, u64)> {
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
            out.extend(page.contents().iter().filter_map(|o| {
                let size = u64::try_from(o.size().unwrap_or(0)).unwrap_or(0);
                Some((o.key()?.to_string(), size))
            }));
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

    /// Start a multipart upload at `key` under skiff's prefix and leave it
    /// (a publish that crashed).
    pub fn abandon_multipart_upload(&self, key: &str) {
        let key = format!("{PREFIX}/{key}");
        let made = self
            .rt
            .block_on(
                self.client
                    .create_multipart_upload()
                    .bucket(&self.name)
                    .key(&key)
                    .send(),
            )
            .expect("creating a multipart upload");
        self.rt
            .block_on(
                self.client
                    .upload_part()
                    .bucket(&self.name)
                    .key(&key)
                    .upload_id(made.upload_id().unwrap())
                    .part_number(1)
                    .body(vec![7u8; 1024].into())
                    .send(),
            )
            .expect("uploading a part");
    }

    /// Multipart uploads in progress in the bucket.
    pub fn multipart_uploads(&self) -> usize {
        self.rt
            .block_on(
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.name)
                    .send(),
            )
            .expect("listing multipart uploads")
            .uploads()
            .len()
    }

    /// The bytes `key` stands for: its own, or, for a dedupe reference
    /// (an empty object naming a digest), those of the copy of that blob
    /// that holds them, found by looking through the bucket.
    fn read(&self, key: &str) -> Option<Vec<u8>> {
        let (bytes, is_ref) = self.read_raw(key)?;
        if !is_ref {
            return Some(bytes);
        }
        let name = key.rsplit_once("/blobs/")?.1;
        self.keys(&format!("{PREFIX}/"))
            .into_iter()
            .filter(|k| k != key && k.ends_with(&format!("/blobs/{name}")))
            .find_map(|k| match self.read_raw(&k) {
                Some((b, false)) => Some(b),
                _ => None,
            })
    }

    /// An object's bytes, and whether it is a dedupe reference.
    fn read_raw(&self, key: &str) -> Option<(Vec<u8>, bool)> {
        let out = self
            .rt
            .block_on(self.client.get_object().bucket(&self.name).key(key).send())
            .ok()?;
        let is_ref = out.metadata().is_some_and(|m| m.contains_key("skiff-ref"));
        let bytes = self.rt.block_on(out.body.collect()).ok()?;
        Some((bytes.into_bytes().to_vec(), is_ref))
    }
}

/// Give a registry config the DynamoDB dedupe cache (`remoteCache`) on the
/// test endpoint, in a table of its own unless `table` names a shared one.
pub fn use_dynamodb(cfg: &mut serde_json::Value, table: &str) {
    cfg["storage"]["remoteCache"] = true.into();
    cfg["storage"]["cacheDriver"] = serde_json::json!({
        "name": "dynamodb",
        "endpoint": endpoint(),
        "region": "us-east-1",
        "cacheTablename": table,
    });
}

/// A table name no other test uses.
pub fn fresh_table() -> String {
    format!("skiff-test-{:016x}", rand::random::<u64>())
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
            Backing::Kv(view) => view.files(prefix),
        }
    }

    /// The bytes of the object at `key`, if there is one.
    pub fn read(&self, key: &str) -> Option<Vec<u8>> {
        match self {
            Backing::Disk(root) => std::fs::read(root.join(key)).ok(),
            Backing::S3(b) => b.read(&format!("{PREFIX}/{key}")),
            Backing::Kv(view) => view.read(key),
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

/// A moto server of its own that checks credentials and signatures (the
/// shared one takes any): only its first `unchecked` requests go through
/// without; killed on drop.
pub struct StrictMoto {
    child: std::process::Child,
    pub endpoint: String,
}

impl StrictMoto {
    pub fn start(unchecked: u32) -> StrictMoto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", unchecked.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting moto");
        let endpoint = format!("http://127.0.0.1:{port}");
        assert!(
            super::eventually(std::time::Duration::from_secs(30), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "moto did not start"
        );
        StrictMoto { child, endpoint }
    }

    /// With the server's 4 unchecked requests: an IAM user allowed all of
    /// S3, its access key, and `bucket`. Returns (key id, secret).
    pub fn user_with_bucket(&self, bucket: &str) -> (String, String) {
        let script = format!(
            r#"
import boto3, json
kw = dict(endpoint_url="{e}", region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="edge")
key = iam.create_access_key(UserName="edge")["AccessKey"]
iam.put_user_policy(UserName="edge", PolicyName="s3", PolicyDocument=json.dumps(
    {{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}}]}}))
s3 = boto3.client("s3", **dict(kw, aws_access_key_id=key["AccessKeyId"],
                               aws_secret_access_key=key["SecretAccessKey"]))
s3.create_bucket(Bucket="{b}")
print(key["AccessKeyId"], key["SecretAccessKey"])
"#,
            e = self.endpoint,
            b = bucket
        );
        let out = super::run(std::process::Command::new(python()).args(["-c", &script]));
        let mut words = out.split_whitespace();
        match (words.next(), words.next()) {
            (Some(id), Some(secret)) => (id.to_string(), secret.to_string()),
            _ => panic!("no access key from moto: {out}"),
        }
    }
}

impl Drop for StrictMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv's python (`$SKIFF_PYTHON`), which has moto and boto3.
fn python() -> String {
    std::env::var("SKIFF_PYTHON")
        .expect("SKIFF_PYTHON is not set: scripts/test.sh sets it to its venv's python")
}
