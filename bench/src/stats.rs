//! What a workload's run measured: every request's latency, bytes moved,
//! errors, and the figures printed from them.

use std::time::Duration;

#[derive(Default, Clone)]
pub struct Stats {
    /// Each finished operation's latency, in microseconds.
    pub latencies_us: Vec<u64>,
    pub bytes: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Stats {
    pub fn record(&mut self, took: Duration, bytes: u64) {
        self.latencies_us.push(took.as_micros() as u64);
        self.bytes += bytes;
    }

    pub fn error(&mut self, e: &anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }

    pub fn merge(&mut self, other: Stats) {
        self.latencies_us.extend(other.latencies_us);
        self.bytes += other.bytes;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn summary(mut self) -> Summary {
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        let pick = |q: f64| -> f64 {
            if n == 0 {
                return f64::NAN;
            }
            let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
            self.latencies_us[i] as f64 / 1000.0
        };
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        Summary {
            ops_per_s: n as f64 / secs,
            mb_per_s: self.bytes as f64 / secs / 1e6,
            p50_ms: pick(0.50),
            p90_ms: pick(0.90),
            p99_ms: pick(0.99),
            max_ms: pick(1.0),
            errors: self.errors,
            first_error: self.first_error,
        }
    }
}

/// The figures of one run.
#[derive(Clone, Debug)]
pub struct Summary {
    pub ops_per_s: f64,
    pub mb_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// The names of the figures, in the order [`Summary::figures`] gives them,
/// and whether more is better.
pub const FIGURES: [(&str, bool); 6] = [
    ("ops/s", true),
    ("MB/s", true),
    ("p50 ms", false),
    ("p90 ms", false),
    ("p99 ms", false),
    ("max ms", false),
];

impl Summary {
    pub fn figures(&self) -> [f64; 6] {
        [
            self.ops_per_s,
            self.mb_per_s,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms,
        ]
    }
}

/// A number for a table: three significant digits or so.
pub fn fmt(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut s = Stats {
            elapsed: Duration::from_secs(2),
            ..Stats::default()
        };
        for ms in 1..=100 {
            s.record(Duration::from_millis(ms), 1_000_000);
        }
        let m = s.summary();
        assert_eq!(m.ops_per_s, 50.0);
        assert_eq!(m.mb_per_s, 50.0);
        assert_eq!(
            (m.p50_ms, m.p90_ms, m.p99_ms, m.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
    }
}
