//! A latency histogram with bounded memory and bounded relative error (a small HDR histogram).
//!
//! Why not keep every sample and sort: a 10 s window at 100k deliveries/s is a million
//! samples, and the generator must stay cheap and bounded. Values (nanoseconds) below
//! [`SUB`] are counted exactly; above, each power of two is split into `SUB / 2` buckets, so a
//! reported percentile is at most 1/64 (≈ 1.6 %) above the true sample, never below it.
//! The maximum is tracked exactly.

/// Values below this are exact; the precision above is `1 / (SUB / 2)`.
const SUB: u64 = 128;
/// log2(SUB).
const SUB_BITS: u32 = 7;
/// Buckets for values up to 2^64 − 1: `SUB` exact ones, then `SUB / 2` per power of two.
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * (SUB / 2)) as usize;

/// Counts of nanosecond values in log-linear buckets.
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
        }
    }
}

/// The bucket a value falls in.
fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // ≥ SUB_BITS
    let shift = exp - (SUB_BITS - 1);
    let mantissa = v >> shift; // in [SUB/2, SUB)
    (SUB + (exp - SUB_BITS) as u64 * (SUB / 2) + (mantissa - SUB / 2)) as usize
}

/// The largest value that falls in bucket `i` (what a percentile reports: never too low).
fn highest(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let k = i - SUB;
    let exp = k / (SUB / 2) + SUB_BITS as u64;
    let mantissa = k % (SUB / 2) + SUB / 2;
    let shift = exp - (SUB_BITS as u64 - 1);
    // ((mantissa + 1) << shift) - 1, without overflowing at the top bucket.
    (mantissa << shift) + ((1u64 << shift) - 1)
}

impl Histogram {
    /// Counts one value.
    pub(crate) fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// How many values were counted.
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// The largest value counted (exact); 0 when empty.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The `p`-th percentile (0 < p ≤ 100) by the nearest-rank method: the smallest value
    /// such that at least `p` % of the samples are ≤ it. Reported as its bucket's upper bound,
    /// clamped to the exact maximum. `None` when empty.
    pub(crate) fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let p = p.clamp(0.0, 100.0);
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(highest(i).min(self.max));
            }
        }
        Some(self.max)
    }

    /// Forgets everything (the warm-up's samples are not part of the measurement).
    pub(crate) fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.max = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bounded() {
        // Every bucket's range starts right after the previous one's and the error is bounded.
        let mut prev_high = None;
        for i in 0..BUCKETS {
            let h = highest(i);
            if let Some(p) = prev_high {
                assert!(h > p, "bucket {i}");
                assert_eq!(index(p + 1), i, "bucket {i} starts after {p}");
            }
            assert_eq!(index(h), i);
            prev_high = Some(h);
        }
        assert_eq!(prev_high, Some(u64::MAX));
        for v in [
            0,
            1,
            127,
            128,
            129,
            1000,
            123_456,
            5_000_000,
            1 << 40,
            u64::MAX,
        ] {
            let h = highest(index(v));
            assert!(h >= v);
            assert!((h - v) as f64 <= v as f64 / 64.0 + 1.0, "{v} → {h}");
        }
    }

    #[test]
    fn small_values_are_exact_percentiles() {
        let mut h = Histogram::default();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(99.0), Some(99));
        assert_eq!(h.percentile(100.0), Some(100));
        assert_eq!(h.percentile(1.0), Some(1));
        assert_eq!(h.percentile(0.0), Some(1), "p0 is the smallest sample");
        assert_eq!(h.max(), 100);
    }

    #[test]
    fn nearest_rank_with_an_outlier() {
        let mut h = Histogram::default();
        for _ in 0..99 {
            h.record(10);
        }
        h.record(1_000_000);
        assert_eq!(h.percentile(50.0), Some(10));
        assert_eq!(h.percentile(99.0), Some(10));
        assert_eq!(
            h.percentile(99.1),
            Some(1_000_000),
            "clamped to the exact max"
        );
        assert_eq!(h.max(), 1_000_000);
    }

    #[test]
    fn large_values_stay_within_the_relative_error() {
        let mut h = Histogram::default();
        for v in (1..=1000u64).map(|i| i * 1_000) {
            h.record(v); // 1 µs … 1 ms
        }
        let p50 = h.percentile(50.0).unwrap();
        assert!((500_000..=500_000 + 500_000 / 64).contains(&p50), "{p50}");
        let p99 = h.percentile(99.0).unwrap();
        assert!((990_000..=990_000 + 990_000 / 64).contains(&p99), "{p99}");
    }

    #[test]
    fn empty_and_cleared() {
        let mut h = Histogram::default();
        assert_eq!(h.percentile(50.0), None);
        h.record(5);
        h.clear();
        assert_eq!((h.count(), h.max(), h.percentile(99.0)), (0, 0, None));
    }
}
