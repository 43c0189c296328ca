//! Paired significance tests against scipy.stats (exact permutation p-values must agree exactly;
//! Monte Carlo p-values and bootstrap intervals within sampling error), and constructed cases whose
//! outcome is certain.

use ragtune_eval::significance::{paired_bootstrap, paired_randomization_test, Alternative};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn pair(n: usize, shift: f64, rng: &mut StdRng) -> (Vec<f64>, Vec<f64>) {
    let a: Vec<f64> = (0..n).map(|_| rng.gen_range(0.0..1.0)).collect();
    let b = a
        .iter()
        .map(|x| (x + shift + rng.gen_range(-0.3..0.3)).clamp(0.0, 1.0))
        .collect();
    (a, b)
}

#[test]
fn significance_matches_scipy() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut permutation = Vec::new();
    for (i, n) in [4, 6, 8, 10, 12, 9, 11, 60, 200].into_iter().enumerate() {
        let (a, mut b) = pair(n, [0.0, 0.05, 0.15][i % 3], &mut rng);
        if i == 5 {
            // Metric values on a grid (as per-query hit@k or P@k are): many equal null statistics.
            b = a
                .iter()
                .map(|x| ((x * 4.0).round() / 4.0 + 0.25).min(1.0))
                .collect();
        }
        for alternative in ["greater", "two-sided"] {
            permutation.push((a.clone(), b.clone(), 9999usize, alternative));
        }
    }
    let mut bootstrap = Vec::new();
    for n in [30, 100, 400] {
        let (a, b) = pair(n, 0.05, &mut rng);
        bootstrap.push((a, b, 4000usize, 0.95));
    }
    let input = json!({
        "permutation": permutation.iter().map(|(a, b, n, alt)| json!({"a": a, "b": b, "n_resamples": n, "alternative": alt})).collect::<Vec<_>>(),
        "bootstrap": bootstrap.iter().map(|(a, b, n, c)| json!({"a": a, "b": b, "n_resamples": n, "confidence": c})).collect::<Vec<_>>(),
    });
    let reference = ragtune_testkit::reference("eval_significance.py", &input);
    let mut exact_cases = 0;
    for (i, ((a, b, n, alt), theirs)) in permutation
        .iter()
        .zip(reference["permutation"].as_array().unwrap())
        .enumerate()
    {
        let alternative = if *alt == "greater" {
            Alternative::Greater
        } else {
            Alternative::TwoSided
        };
        let ours = paired_randomization_test(a, b, *n, alternative, 42).unwrap();
        let p = theirs["p_value"].as_f64().unwrap();
        assert!((ours.mean_difference - theirs["statistic"].as_f64().unwrap()).abs() < 1e-12);
        // Exact tests enumerate the same null distribution; Monte Carlo ones agree within ~4 SE.
        let tolerance = if ours.exact {
            1e-12
        } else {
            4.0 * (p.max(0.01) * (1.0 - p) / *n as f64).sqrt() + 2e-4
        };
        exact_cases += usize::from(ours.exact);
        assert!(
            (ours.p_value - p).abs() <= tolerance,
            "permutation case {i} (n={}, {alt}, exact {}): ours {}, scipy {p}",
            a.len(),
            ours.exact,
            ours.p_value
        );
    }
    assert!(exact_cases >= 10);
    for (i, ((a, b, n, c), theirs)) in bootstrap
        .iter()
        .zip(reference["bootstrap"].as_array().unwrap())
        .enumerate()
    {
        let ours = paired_bootstrap(a, b, *n, *c, 42).unwrap();
        let se = theirs["standard_error"].as_f64().unwrap();
        for (name, o, t) in [
            ("low", ours.ci_low, &theirs["low"]),
            ("high", ours.ci_high, &theirs["high"]),
        ] {
            let t = t.as_f64().unwrap();
            assert!(
                (o - t).abs() <= 0.25 * se,
                "bootstrap case {i} {name}: ours {o}, scipy {t} (SE {se})"
            );
        }
    }
}

#[test]
fn constructed_cases_have_certain_outcomes() {
    let a: Vec<f64> = (0..50).map(|i| f64::from(i % 7) / 7.0).collect();
    let better: Vec<f64> = a.iter().map(|x| x + 0.2).collect();
    let boot = paired_bootstrap(&a, &better, 2000, 0.95, 1).unwrap();
    assert!((boot.mean_difference - 0.2).abs() < 1e-12);
    assert!((boot.ci_low - 0.2).abs() < 1e-12 && (boot.ci_high - 0.2).abs() < 1e-12);
    assert_eq!(boot.p_value, 1.0 / 2001.0);
    let perm = paired_randomization_test(&a, &better, 5000, Alternative::Greater, 1).unwrap();
    assert_eq!(perm.p_value, 1.0 / 5001.0);

    let same = paired_bootstrap(&a, &a, 1000, 0.95, 1).unwrap();
    assert_eq!(same.p_value, 1.0);
    let same = paired_randomization_test(&a, &a, 1000, Alternative::TwoSided, 1).unwrap();
    assert_eq!(same.p_value, 1.0);

    // Same seed, same answer; different seed, (almost surely) a different resample.
    let (x, y) = pair(40, 0.02, &mut StdRng::seed_from_u64(9));
    let first = paired_bootstrap(&x, &y, 500, 0.9, 7).unwrap();
    let again = paired_bootstrap(&x, &y, 500, 0.9, 7).unwrap();
    assert_eq!(
        (first.ci_low, first.ci_high, first.p_value),
        (again.ci_low, again.ci_high, again.p_value)
    );

    assert!(paired_bootstrap(&[1.0], &[1.0, 2.0], 10, 0.95, 0).is_err());
    assert!(paired_randomization_test(&[], &[], 10, Alternative::Greater, 0).is_err());
    assert!(paired_bootstrap(&[f64::NAN], &[1.0], 10, 0.95, 0).is_err());
}
