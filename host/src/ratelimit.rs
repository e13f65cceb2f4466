//! `http.ratelimit` (zot's keys): `rate` requests per second, and `methods`
//! with a rate of their own for some HTTP methods. Each client address gets
//! its own token bucket per rate (one busy client does not starve the
//! rest), holding one second's worth: a client may send `rate` requests at
//! once, then `rate` a second. A request over it gets 429 with
//! `Retry-After` before anything else is done for it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The checked settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Requests per second for any method without one of its own.
    pub rate: Option<f64>,
    /// Method (upper case) → requests per second.
    pub methods: Vec<(String, f64)>,
}

/// Buckets kept before idle ones are dropped; a client whose bucket was
/// dropped starts full again, which only ever errs on the client's side.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Limiter {
    settings: RateLimit,
    buckets: Mutex<HashMap<(IpAddr, Option<String>), Bucket>>,
}

impl Limiter {
    pub fn new(settings: RateLimit) -> Limiter {
        Limiter {
            settings,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take a token for a request; `Err(wait)` if there is none, with how
    /// long until there is.
    pub fn check(&self, client: IpAddr, method: &str) -> Result<(), Duration> {
        let (key, rate) = match self.settings.methods.iter().find(|(m, _)| m == method) {
            Some((m, r)) => (Some(m.clone()), *r),
            None => match self.settings.rate {
                Some(r) => (None, r),
                None => return Ok(()),
            },
        };
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_BUCKETS {
            // Full buckets are the ones that were idle for a second or more.
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(1));
        }
        let b = buckets.entry((client, key)).or_insert(Bucket {
            tokens: rate.max(1.0),
            at: now,
        });
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate.max(1.0));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_gets_the_rate_then_waits() {
        let l = Limiter::new(RateLimit {
            rate: Some(5.0),
            methods: vec![("PUT".into(), 1.0)],
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..5 {
            assert!(l.check(a, "GET").is_ok());
        }
        let wait = l.check(a, "GET").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        // Another client, and another method's bucket, are untouched.
        assert!(l.check(b, "GET").is_ok());
        assert!(l.check(a, "PUT").is_ok());
        assert!(l.check(a, "PUT").is_err());
    }

    #[test]
    fn no_rate_means_no_limit() {
        let l = Limiter::new(RateLimit {
            rate: None,
            methods: vec![("DELETE".into(), 1.0)],
        });
        let a: IpAddr = "::1".parse().unwrap();
        assert!((0..1000).all(|_| l.check(a, "GET").is_ok()));
    }
}
