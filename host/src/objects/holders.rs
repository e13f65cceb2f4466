//! Dedupe on a store without hard links (S3): for each digest, the one
//! object holding the bytes (the *holder*) and the keys that refer to it
//! (*references*: empty objects naming the digest). zot's model: references
//! are resolved through this index, and deleting the holder first makes one
//! of the references the holder.
//!
//! Two implementations behind one trait: an embedded redb file for a single
//! server (zot's boltdb default), and a DynamoDB table for several servers
//! on one bucket (`remoteCache`). Every change is conditional on what the
//! caller saw, so two servers racing over one digest never both win:
//! redb by serializing write transactions, DynamoDB by condition
//! expressions.

use super::aws;
use anyhow::Context as _;
use async_trait::async_trait;
use aws_sdk_dynamodb::client::Waiters as _;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

pub use crate::config::DynamoSettings;

/// One digest's entry. Keys are full keys in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub holder: String,
    pub refs: BTreeSet<String>,
}

pub type HoldersResult<T> = Result<T, String>;

/// Each change returns `false`, changing nothing, when the entry is not as
/// the caller expected (`holder` differs, or the entry is gone).
#[async_trait]
pub trait Holders: Send + Sync {
    async fn entry(&self, digest: &str) -> HoldersResult<Option<Entry>>;
    /// A first holder, if the digest has none.
    async fn create(&self, digest: &str, holder: &str) -> HoldersResult<bool>;
    /// Record `key` as a reference while `holder` holds the bytes. Recorded
    /// before the reference object is written, so a holder being deleted
    /// always gives its bytes to a reference about to appear.
    async fn add_ref(&self, digest: &str, key: &str, holder: &str) -> HoldersResult<bool>;
    async fn remove_ref(&self, digest: &str, key: &str) -> HoldersResult<()>;
    /// `new` (a reference, now holding a copy) becomes the holder.
    async fn promote(&self, digest: &str, old: &str, new: &str) -> HoldersResult<bool>;
    /// Forget the digest: only while `holder` holds it and nothing refers to it.
    async fn remove(&self, digest: &str, holder: &str) -> HoldersResult<bool>;
}

/// digest → JSON of its `Entry`.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("s3-holders");

/// The embedded index: a redb file on the server's local disk.
pub struct RedbHolders {
    db: Arc<Database>,
}

impl RedbHolders {
    pub fn open(path: &Path) -> anyhow::Result<RedbHolders> {
        let db = Database::create(path).with_context(|| {
            format!(
                "opening the dedupe cache {} (is another skiff using it?)",
                path.display()
            )
        })?;
        let tx = db.begin_write()?;
        tx.open_table(ENTRIES)?;
        tx.commit()?;
        Ok(RedbHolders { db: Arc::new(db) })
    }

    /// Read the entry and maybe replace it, in one write transaction.
    async fn change(
        &self,
        digest: &str,
        f: impl FnOnce(Option<Entry>) -> Option<Option<Entry>> + Send + 'static,
    ) -> HoldersResult<bool> {
        let (db, digest) = (self.db.clone(), digest.to_string());
        tokio::task::spawn_blocking(move || -> Result<bool, redb::Error> {
            let tx = db.begin_write()?;
            let changed = {
                let mut t = tx.open_table(ENTRIES)?;
                let old = t
                    .get(digest.as_str())?
                    .and_then(|v| serde_json::from_slice::<Entry>(v.value()).ok());
                match f(old) {
                    None => false,
                    Some(None) => {
                        t.remove(digest.as_str())?;
                        true
                    }
                    Some(Some(e)) => {
                        let bytes = serde_json::to_vec(&e).unwrap_or_default();
                        t.insert(digest.as_str(), bytes.as_slice())?;
                        true
                    }
                }
            };
            if changed {
                tx.commit()?;
            } else {
                tx.abort()?;
            }
            Ok(changed)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("dedupe cache: {e}"))
    }
}

#[async_trait]
impl Holders for RedbHolders {
    async fn entry(&self, digest: &str) -> HoldersResult<Option<Entry>> {
        let (db, digest) = (self.db.clone(), digest.to_string());
        tokio::task::spawn_blocking(move || -> Result<Option<Entry>, redb::Error> {
            let tx = db.begin_read()?;
            let t = tx.open_table(ENTRIES)?;
            Ok(t.get(digest.as_str())?
                .and_then(|v| serde_json::from_slice(v.value()).ok()))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("dedupe cache: {e}"))
    }

    async fn create(&self, digest: &str, holder: &str) -> HoldersResult<bool> {
        let holder = holder.to_string();
        self.change(digest, move |old| {
            old.is_none().then_some(Some(Entry {
                holder,
                refs: BTreeSet::new(),
            }))
        })
        .await
    }

    async fn add_ref(&self, digest: &str, key: &str, holder: &str) -> HoldersResult<bool> {
        let (key, holder) = (key.to_string(), holder.to_string());
        self.change(digest, move |old| {
            let mut e = old.filter(|e| e.holder == holder)?;
            e.refs.insert(key);
            Some(Some(e))
        })
        .await
    }

    async fn remove_ref(&self, digest: &str, key: &str) -> HoldersResult<()> {
        let key = key.to_string();
        self.change(digest, move |old| {
            let mut e = old?;
            e.refs.remove(&key).then_some(Some(e))
        })
        .await
        .map(|_| ())
    }

    async fn promote(&self, digest: &str, old: &str, new: &str) -> HoldersResult<bool> {
        let (old_h, new_h) = (old.to_string(), new.to_string());
        self.change(digest, move |e| {
            let mut e = e.filter(|e| e.holder == old_h && e.refs.contains(&new_h))?;
            e.refs.remove(&new_h);
            e.holder = new_h;
            Some(Some(e))
        })
        .await
    }

    async fn remove(&self, digest: &str, holder: &str) -> HoldersResult<bool> {
        let holder = holder.to_string();
        self.change(digest, move |e| {
            e.filter(|e| e.holder == holder && e.refs.is_empty())
                .map(|_| None)
        })
        .await
    }
}

/// The shared index: one DynamoDB table (zot's `cacheTablename`), one
/// item per digest and store: `{digest, holder, refs}`, `refs` a string
/// set (DynamoDB drops a set that becomes empty).
pub struct DynamoHolders {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// Names the store in each item's key, so stores (buckets, prefixes)
    /// can share one table.
    store: String,
}

fn dynamo_err<E: std::error::Error + 'static, R: std::fmt::Debug>(
    e: aws_sdk_dynamodb::error::SdkError<E, R>,
) -> String {
    format!(
        "DynamoDB: {}",
        aws_sdk_dynamodb::error::DisplayErrorContext(&e)
    )
}

/// `Ok(false)` for a failed condition, the error otherwise.
fn conditional<T, E, R>(
    r: Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
) -> HoldersResult<bool>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_dynamodb::error::ProvideErrorMetadata as _;
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(dynamo_err(e)),
    }
}

impl DynamoHolders {
    /// Connect, and create the table if it is not there yet.
    pub async fn connect(s: &DynamoSettings, store: String) -> anyhow::Result<DynamoHolders> {
        let shared = aws::shared_config(&s.region, s.credentials.as_ref()).await;
        let mut conf =
            aws_sdk_dynamodb::config::Builder::from(&shared).interceptor(aws::CountRequests);
        if let Some(e) = &s.endpoint {
            conf = conf.endpoint_url(e);
        }
        let client = aws_sdk_dynamodb::Client::from_conf(conf.build());
        let where_ = aws::describe_endpoint(s.endpoint.as_deref(), &s.region);
        let described = client.describe_table().table_name(&s.table).send().await;
        match described {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                tracing::info!(table = s.table, "creating the DynamoDB dedupe table");
                let created = client
                    .create_table()
                    .table_name(&s.table)
                    .billing_mode(BillingMode::PayPerRequest)
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name("digest")
                            .attribute_type(ScalarAttributeType::S)
                            .build()?,
                    )
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name("digest")
                            .key_type(KeyType::Hash)
                            .build()?,
                    )
                    .send()
                    .await;
                match created {
                    Ok(_) => {}
                    // Another server created it at the same moment.
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_resource_in_use_exception()) => {}
                    Err(e) => anyhow::bail!(
                        "cacheTablename {:?} {where_}: cannot create it: {}",
                        s.table,
                        dynamo_err(e)
                    ),
                }
                client
                    .wait_until_table_exists()
                    .table_name(&s.table)
                    .wait(std::time::Duration::from_secs(120))
                    .await
                    .map_err(|e| anyhow::anyhow!("cacheTablename {:?}: not ready: {e}", s.table))?;
            }
            Err(e) => anyhow::bail!("cacheTablename {:?} {where_}: {}", s.table, dynamo_err(e)),
        }
        Ok(DynamoHolders {
            client,
            table: s.table.clone(),
            store,
        })
    }

    fn key(&self, digest: &str) -> AttributeValue {
        AttributeValue::S(format!("{}#{digest}", self.store))
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn set(v: &str) -> AttributeValue {
    AttributeValue::Ss(vec![v.to_string()])
}

#[async_trait]
impl Holders for DynamoHolders {
    async fn entry(&self, digest: &str) -> HoldersResult<Option<Entry>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("digest", self.key(digest))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_err)?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let Some(AttributeValue::S(holder)) = item.get("holder") else {
            return Err(format!("DynamoDB: the entry of {digest} has no holder"));
        };
        let refs = match item.get("refs") {
            Some(AttributeValue::Ss(r)) => r.iter().cloned().collect(),
            _ => BTreeSet::new(),
        };
        Ok(Some(Entry {
            holder: holder.clone(),
            refs,
        }))
    }

    async fn create(&self, digest: &str, holder: &str) -> HoldersResult<bool> {
        conditional(
            self.client
                .put_item()
                .table_name(&self.table)
                .item("digest", self.key(digest))
                .item("holder", s(holder))
                .condition_expression("attribute_not_exists(digest)")
                .send()
                .await,
        )
    }

    async fn add_ref(&self, digest: &str, key: &str, holder: &str) -> HoldersResult<bool> {
        conditional(
            self.client
                .update_item()
                .table_name(&self.table)
                .key("digest", self.key(digest))
                .update_expression("ADD refs :r")
                .condition_expression("holder = :h")
                .expression_attribute_values(":r", set(key))
                .expression_attribute_values(":h", s(holder))
                .send()
                .await,
        )
    }

    async fn remove_ref(&self, digest: &str, key: &str) -> HoldersResult<()> {
        conditional(
            self.client
                .update_item()
                .table_name(&self.table)
                .key("digest", self.key(digest))
                .update_expression("DELETE refs :r")
                .condition_expression("attribute_exists(digest)")
                .expression_attribute_values(":r", set(key))
                .send()
                .await,
        )
        .map(|_| ())
    }

    async fn promote(&self, digest: &str, old: &str, new: &str) -> HoldersResult<bool> {
        conditional(
            self.client
                .update_item()
                .table_name(&self.table)
                .key("digest", self.key(digest))
                .update_expression("SET holder = :n DELETE refs :ns")
                .condition_expression("holder = :o AND contains(refs, :n)")
                .expression_attribute_values(":n", s(new))
                .expression_attribute_values(":ns", set(new))
                .expression_attribute_values(":o", s(old))
                .send()
                .await,
        )
    }

    async fn remove(&self, digest: &str, holder: &str) -> HoldersResult<bool> {
        conditional(
            self.client
                .delete_item()
                .table_name(&self.table)
                .key("digest", self.key(digest))
                .condition_expression("holder = :h AND attribute_not_exists(refs)")
                .expression_attribute_values(":h", s(holder))
                .send()
                .await,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same cases against every implementation.
    async fn behaves(h: &dyn Holders) {
        let d = "sha256:aa";
        assert_eq!(h.entry(d).await.unwrap(), None);
        assert!(!h.add_ref(d, "b", "a").await.unwrap(), "no holder yet");
        assert!(h.create(d, "a").await.unwrap());
        assert!(!h.create(d, "x").await.unwrap(), "one holder only");
        assert!(h.add_ref(d, "b", "a").await.unwrap());
        assert!(h.add_ref(d, "c", "a").await.unwrap());
        assert!(!h.add_ref(d, "c", "x").await.unwrap(), "another holder");
        assert!(!h.remove(d, "a").await.unwrap(), "references remain");
        assert!(!h.promote(d, "a", "zz").await.unwrap(), "not a reference");
        assert!(!h.promote(d, "x", "b").await.unwrap(), "not the holder");
        assert!(h.promote(d, "a", "b").await.unwrap());
        let e = h.entry(d).await.unwrap().unwrap();
        assert_eq!(e.holder, "b");
        assert_eq!(e.refs.into_iter().collect::<Vec<_>>(), ["c"]);
        h.remove_ref(d, "c").await.unwrap();
        h.remove_ref(d, "c").await.unwrap();
        h.remove_ref("sha256:none", "c").await.unwrap();
        assert!(!h.remove(d, "a").await.unwrap(), "not the holder");
        assert!(h.remove(d, "b").await.unwrap());
        assert_eq!(h.entry(d).await.unwrap(), None);
    }

    #[tokio::test]
    async fn redb() {
        let dir = tempfile::tempdir().unwrap();
        behaves(&RedbHolders::open(&dir.path().join("c.db")).unwrap()).await;
    }

    #[tokio::test]
    async fn dynamodb() {
        let endpoint = std::env::var("SKIFF_TEST_S3_ENDPOINT")
            .expect("SKIFF_TEST_S3_ENDPOINT is not set: scripts/test.sh starts moto and sets it");
        let table = format!("skiff-test-{:016x}", rand::random::<u64>());
        let settings = DynamoSettings {
            endpoint: Some(endpoint),
            region: "us-east-1".into(),
            table,
            credentials: Some(("testing".into(), "testing".into())),
        };
        let h = DynamoHolders::connect(&settings, "bucket/prefix".into())
            .await
            .unwrap();
        behaves(&h).await;
        // A second connection finds the table made by the first.
        DynamoHolders::connect(&settings, "other".into())
            .await
            .unwrap();
    }
}
