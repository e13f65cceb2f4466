//! What skiff's S3 and DynamoDB clients share: their base configuration
//! (region, credentials, retries), and the count of requests they send, per
//! service and operation, for `/metrics` (`skiff_cloud_requests_total`):
//! what each registry operation costs in requests is what an operator pays
//! for. Every attempt counts, retries after throttling included.

use aws_sdk_s3::config::ConfigBag;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// (service, operation) → attempts sent, for the whole process.
static SENT: Mutex<BTreeMap<(String, String), u64>> = Mutex::new(BTreeMap::new());

/// The configuration every client starts from: `region`, the static
/// credentials the config gives (else the standard AWS chain: environment,
/// `AWS_PROFILE` and `~/.aws/credentials`, instance roles), [`retries`].
pub async fn shared_config(
    region: &str,
    credentials: Option<&(String, String)>,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .retry_config(retries());
    if let Some((id, secret)) = credentials {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            id,
            secret,
            None,
            None,
            "skiff config",
        ));
    }
    loader.load().await
}

/// Where a client connects, for messages: the endpoint, or AWS's region.
pub fn describe_endpoint(endpoint: Option<&str>, region: &str) -> String {
    match endpoint {
        Some(e) => format!("at {e}"),
        None => format!("in AWS region {region}"),
    }
}

/// How S3 and DynamoDB requests are retried: throttling (`SlowDown`,
/// 503) and transient errors again after an exponential backoff with full
/// jitter, up to 8 attempts, so a client sees throttling only as latency.
/// Not the SDK's adaptive mode: its client-side rate limiter, after a
/// burst of throttling, held every request of the process back for tens
/// of seconds (`tests/s3_requests.rs`).
fn retries() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(8)
        .with_initial_backoff(std::time::Duration::from_millis(50))
        .with_max_backoff(std::time::Duration::from_secs(5))
}

/// Counts each attempt an SDK client sends.
#[derive(Debug)]
pub struct CountRequests;

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "skiff-count-requests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            let mut sent = SENT.lock().unwrap_or_else(|p| p.into_inner());
            *sent
                .entry((m.service().to_string(), m.name().to_string()))
                .or_default() += 1;
        }
        Ok(())
    }
}

/// The counts in Prometheus' text format (nothing before the first request).
pub fn render(out: &mut String) {
    let sent = SENT.lock().unwrap_or_else(|p| p.into_inner());
    if sent.is_empty() {
        return;
    }
    out.push_str(
        "# HELP skiff_cloud_requests_total Requests sent to S3 and DynamoDB, retries included.\n\
         # TYPE skiff_cloud_requests_total counter\n",
    );
    for ((service, op), n) in sent.iter() {
        let _ = writeln!(
            out,
            "skiff_cloud_requests_total{{service=\"{service}\",operation=\"{op}\"}} {n}"
        );
    }
}
