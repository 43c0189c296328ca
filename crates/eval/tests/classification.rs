//! Classification metrics against scikit-learn: FAQ categories with deterministic label noise, and
//! small cases with labels never predicted or never true (zero_division 0 and 1).

mod common;

use ragtune_eval::classification::{classification_report, Prf};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

struct Case {
    y_true: Vec<String>,
    y_pred: Vec<String>,
    zero_division: f64,
}

fn cases() -> Vec<Case> {
    let rows = common::faq();
    let categories: Vec<String> = rows.iter().map(|r| r.category.clone()).collect();
    let mut rng = StdRng::seed_from_u64(3);
    let mut out = Vec::new();
    for (noise, zero_division) in [(0.0, 0.0), (0.1, 0.0), (0.4, 1.0), (0.9, 0.0)] {
        let y_pred = categories
            .iter()
            .map(|c| {
                if rng.gen_bool(noise) {
                    if rng.gen_bool(0.2) {
                        "never-true".to_string()
                    } else {
                        categories[rng.gen_range(0..categories.len())].clone()
                    }
                } else {
                    c.clone()
                }
            })
            .collect();
        out.push(Case {
            y_true: categories.clone(),
            y_pred,
            zero_division,
        });
    }
    for i in 0..60 {
        let n = rng.gen_range(1..15);
        let labels = ["a", "b", "c", "ä", "日本"];
        let pick = |rng: &mut StdRng| labels[rng.gen_range(0..labels.len())].to_string();
        let y_true: Vec<String> = (0..n).map(|_| pick(&mut rng)).collect();
        let y_pred: Vec<String> = (0..n).map(|_| pick(&mut rng)).collect();
        out.push(Case {
            y_true,
            y_pred,
            zero_division: if i % 2 == 0 { 0.0 } else { 1.0 },
        });
    }
    out
}

fn close_prf(label: &str, ours: &Prf, theirs: &Value) {
    for (name, o, t) in [
        ("P", ours.precision, &theirs[0]),
        ("R", ours.recall, &theirs[1]),
        ("F1", ours.f1, &theirs[2]),
    ] {
        let t = t.as_f64().unwrap();
        assert!(
            (o - t).abs() <= 1e-9,
            "{label} {name}: ours {o}, sklearn {t}"
        );
    }
}

#[test]
fn classification_matches_sklearn() {
    let cases = cases();
    let input = json!({"cases": cases.iter().map(|c| json!({"y_true": c.y_true, "y_pred": c.y_pred, "zero_division": c.zero_division})).collect::<Vec<_>>()});
    let reference = ragtune_testkit::reference("eval_classification.py", &input);
    let reference = reference.as_array().unwrap();
    assert_eq!(reference.len(), cases.len());
    for (i, (case, theirs)) in cases.iter().zip(reference).enumerate() {
        let ours = classification_report(&case.y_true, &case.y_pred, case.zero_division).unwrap();
        let label = format!("case {i} (zero_division {})", case.zero_division);
        assert_eq!(json!(ours.labels), theirs["labels"], "{label} labels");
        assert_eq!(
            json!(ours.confusion),
            theirs["confusion"],
            "{label} confusion"
        );
        assert_eq!(json!(ours.support), theirs["support"], "{label} support");
        assert!(
            (ours.accuracy - theirs["accuracy"].as_f64().unwrap()).abs() <= 1e-12,
            "{label} accuracy"
        );
        for (j, prf) in ours.per_label.iter().enumerate() {
            close_prf(
                &format!("{label} label {}", ours.labels[j]),
                prf,
                &theirs["per_label"][j],
            );
        }
        close_prf(&format!("{label} micro"), &ours.micro, &theirs["micro"]);
        close_prf(&format!("{label} macro"), &ours.macro_avg, &theirs["macro"]);
        close_prf(
            &format!("{label} weighted"),
            &ours.weighted,
            &theirs["weighted"],
        );
    }
}

#[test]
fn classification_rejects_bad_input() {
    assert!(classification_report::<&str>(&[], &[], 0.0).is_err());
    assert!(classification_report(&["a"], &["a", "b"], 0.0).is_err());
}
