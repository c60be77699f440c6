//! Median and spread of repeated measurements.

/// Repeated measurements of one thing.
#[derive(Clone, Debug, Default)]
pub struct Series(pub Vec<f64>);

impl Series {
    pub fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    /// "median (min–max)" with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!("{:.digits$} ({:.digits$}–{:.digits$})", self.median(), self.min(), self.max())
    }
}

#[cfg(test)]
mod tests {
    use super::Series;

    #[test]
    fn median_and_spread() {
        assert_eq!(Series(vec![3.0, 1.0, 2.0]).median(), 2.0);
        assert_eq!(Series(vec![4.0, 1.0, 2.0, 3.0]).median(), 2.5);
        assert!(Series(vec![]).median().is_nan());
        assert_eq!(Series(vec![4.0, 1.0]).show(1), "2.5 (1.0–4.0)");
    }
}
