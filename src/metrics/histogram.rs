//! A Prometheus histogram with fixed buckets, lock-free to observe.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Histogram {
    /// Upper bounds of the buckets, ascending (the +Inf bucket is implicit).
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative; summed when rendered).
    counts: Vec<AtomicU64>,
    /// Sum of the observations, in millionths of the unit, so it fits an atomic integer.
    sum_micros: AtomicU64,
}

/// Seconds, from 100 µs to 30 s: commits and unary calls sit at the low end, long polls high.
pub const LATENCY_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Counts, for messages per commit.
pub const COUNTS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines; `labels` is `key="value",…` or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let separator = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |labels: &str| {
            if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets() {
        let histogram = Histogram::new(&[1.0, 2.0]);
        for value in [0.5, 1.5, 1.5, 9.0] {
            histogram.observe(value);
        }
        let mut out = String::new();
        histogram.render(&mut out, "x_seconds", "method=\"A\"");
        assert_eq!(
            out,
            "x_seconds_bucket{method=\"A\",le=\"1\"} 1\n\
             x_seconds_bucket{method=\"A\",le=\"2\"} 3\n\
             x_seconds_bucket{method=\"A\",le=\"+Inf\"} 4\n\
             x_seconds_sum{method=\"A\"} 12.5\n\
             x_seconds_count{method=\"A\"} 4\n"
        );
        assert_eq!(histogram.count(), 4);
    }
}
