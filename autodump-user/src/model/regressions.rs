//! The stacks whose share of on-CPU samples grew most after a rule's trigger: a rule bundle's
//! `regressed_stacks`.

use std::collections::HashMap;

use super::reports::Regression;
use crate::record::{folded::folded, profile::Profile};

/// How many regressed stacks the summary lists.
pub const TOP_REGRESSIONS: usize = 10;

/// Stacks whose share of samples grew most from `before` to `after`, largest growth first.
pub fn regressions(before: &Profile, after: &Profile, top: usize) -> Vec<Regression> {
    let shares = |p: &Profile| -> HashMap<String, f64> {
        let text = folded(p);
        let lines: Vec<(&str, f64)> = text
            .lines()
            .filter_map(|l| l.rsplit_once(' ').and_then(|(s, w)| Some((s, w.parse::<f64>().ok()?))))
            .collect();
        let total: f64 = lines.iter().map(|l| l.1).sum();
        lines.into_iter().map(|(s, w)| (s.to_string(), if total > 0.0 { w / total } else { 0.0 })).collect()
    };
    let (b, a) = (shares(before), shares(after));
    let mut grown: Vec<Regression> = a
        .iter()
        .map(|(stack, &after_share)| Regression {
            stack: stack.clone(),
            before_share: b.get(stack).copied().unwrap_or(0.0),
            after_share,
        })
        .filter(|r| r.after_share > r.before_share)
        .collect();
    grown.sort_by(|x, y| {
        (y.after_share - y.before_share)
            .total_cmp(&(x.after_share - x.before_share))
            .then_with(|| x.stack.cmp(&y.stack))
    });
    grown.truncate(top);
    grown
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::profile::tests::flat_profile as profile;

    #[test]
    fn finds_the_stack_that_grew() {
        let before = profile(&[("calm", 90), ("spike", 10)]);
        let after = profile(&[("calm", 20), ("spike", 80)]);
        let r = regressions(&before, &after, TOP_REGRESSIONS);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].stack, "t;spike");
        assert!((r[0].before_share - 0.1).abs() < 1e-9 && (r[0].after_share - 0.8).abs() < 1e-9);
    }
}
