//! Order statistics over samples and over rounds.

/// The `q` quantile (0..=1) of `values`, by linear interpolation between
/// the closest ranks. NaNs (failed runs) are ignored; `NaN` if none remain.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let rank = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    let weight = rank - low as f64;
    sorted[low] * (1.0 - weight) + sorted[high] * weight
}

pub fn median(values: &[f64]) -> f64 {
    quantile(values, 0.5)
}

/// Median and spread of one metric over the rounds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub p25: f64,
    pub p75: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Self {
        Summary {
            median: median(values),
            min: quantile(values, 0.0),
            max: quantile(values, 1.0),
            p25: quantile(values, 0.25),
            p75: quantile(values, 0.75),
        }
    }
}

/// Round-by-round ratios `a[i] / b[i]` (the rounds ran interleaved, so a
/// slow moment of the machine hits both sides of each pair alike).
pub fn paired_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_and_skip_nan() {
        let v = [4.0, 1.0, f64::NAN, 3.0, 2.0];
        assert_eq!(median(&v), 2.5);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!(median(&[f64::NAN]).is_nan());
    }
}
