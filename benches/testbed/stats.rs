//! Medians and spreads of repeated measurements.

use serde_json::{json, Value};

/// A sample of repeated measurements of one quantity.
#[derive(Debug, Clone)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    /// Lower and upper end of the spread: p10–p90 with 10 or more values,
    /// min–max with fewer.
    pub lo: f64,
    pub hi: f64,
    pub min: f64,
    pub max: f64,
}

/// Linear interpolation between closest ranks (`q` in 0..=1) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.len() == 1 {
        return sorted[0];
    }
    let pos = q * (sorted.len() - 1) as f64;
    let i = pos.floor() as usize;
    let frac = pos - i as f64;
    if i + 1 >= sorted.len() {
        sorted[sorted.len() - 1]
    } else {
        sorted[i] + (sorted[i + 1] - sorted[i]) * frac
    }
}

impl Summary {
    /// None for an empty sample (NaNs are dropped).
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        let (lo, hi) = if v.len() >= 10 {
            (quantile(&v, 0.1), quantile(&v, 0.9))
        } else {
            (v[0], v[v.len() - 1])
        };
        Some(Summary {
            n: v.len(),
            median: quantile(&v, 0.5),
            lo,
            hi,
            min: v[0],
            max: v[v.len() - 1],
        })
    }

    /// What `lo`–`hi` stands for.
    pub fn spread_kind(&self) -> &'static str {
        if self.n >= 10 {
            "p10–p90"
        } else {
            "min–max"
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "n": self.n,
            "median": round(self.median),
            "spread": self.spread_kind().replace('–', "-"),
            "lo": round(self.lo),
            "hi": round(self.hi),
            "min": round(self.min),
            "max": round(self.max),
        })
    }
}

/// Rounds to 4 significant digits for the JSON file.
pub fn round(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let mag = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(3 - mag);
    (x * scale).round() / scale
}

/// Formats a number for the Markdown table with about 3 significant digits.
pub fn fmt(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Per-pair ratios a[i]/b[i] of measurements taken side by side.
pub fn paired_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter(|(_, y)| **y != 0.0)
        .map(|(x, y)| x / y)
        .collect()
}
