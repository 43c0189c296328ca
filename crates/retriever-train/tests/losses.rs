//! The losses against the same formulas computed by torch (tests/reference/retriever_losses.py).

use ragtune_retriever_train::losses::{self, Similarity};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use tch::{Kind, Tensor};

fn random(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<Vec<f64>> {
    (0..rows)
        .map(|_| (0..cols).map(|_| rng.gen_range(-1.0..1.0)).collect())
        .collect()
}

fn leaf(rows: &[Vec<f64>]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    Tensor::from_slice(&flat)
        .view([rows.len() as i64, -1])
        .set_requires_grad(true)
}

fn leaf1(values: &[f64]) -> Tensor {
    let flat: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Tensor::from_slice(&flat).set_requires_grad(true)
}

fn assert_close(actual: &Tensor, expected: &Value, what: &str) {
    let actual: Vec<f32> = Vec::try_from(actual.to_kind(Kind::Float).flatten(0, -1)).unwrap();
    let expected: Vec<f64> = match expected {
        Value::Array(rows) if rows.first().is_some_and(Value::is_array) => rows
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect(),
        Value::Array(values) => values.iter().map(|v| v.as_f64().unwrap()).collect(),
        other => vec![other.as_f64().unwrap()],
    };
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        let tolerance = 2e-5 * e.abs().max(1.0);
        assert!(
            (*a as f64 - e).abs() <= tolerance,
            "{what}[{i}]: ragtune {a}, torch {e}"
        );
    }
}

#[test]
fn losses_and_gradients_match_torch() {
    let mut rng = StdRng::seed_from_u64(7);
    let (batch, hard, dim, candidates) = (6, 4, 16, 5);
    let queries = random(&mut rng, batch, dim);
    let passages = random(&mut rng, batch + hard, dim);
    let student = random(&mut rng, batch, candidates);
    let teacher = random(&mut rng, batch, candidates);
    let [sp, sn, tp, tn] = [0; 4].map(|_| random(&mut rng, 1, batch).remove(0));
    let cosine_temperature = losses::DEFAULT_TEMPERATURE;
    let expected = ragtune_testkit::reference(
        "retriever_losses.py",
        &json!({
            "queries": queries, "passages": passages,
            "cases": [{"similarity": "cosine", "temperature": cosine_temperature},
                      {"similarity": "dot", "temperature": 2.0}],
            "student": student, "teacher": teacher, "kl_temperature": 2.0,
            "sp": sp, "sn": sn, "tp": tp, "tn": tn,
        }),
    );
    for (similarity, name, temperature) in [
        (Similarity::Cosine, "cosine", cosine_temperature),
        (Similarity::Dot, "dot", 2.0),
    ] {
        for (loss_name, symmetric) in [("info_nce", false), ("symmetric", true)] {
            let (q, p) = (leaf(&queries), leaf(&passages));
            let scores = similarity.matrix(&q, &p);
            let loss = if symmetric {
                losses::symmetric_info_nce(&scores, temperature)
            } else {
                losses::info_nce(&scores, temperature)
            }
            .unwrap();
            loss.backward();
            let what = format!("{loss_name}/{name}");
            let reference = &expected[name][loss_name];
            assert_close(&loss, &reference["loss"], &what);
            assert_close(&q.grad(), &reference["grad_q"], &format!("{what} dq"));
            assert_close(&p.grad(), &reference["grad_p"], &format!("{what} dp"));
        }
    }

    let (student_positive, student_negative) = (leaf1(&sp), leaf1(&sn));
    let loss = losses::margin_mse(
        &student_positive,
        &student_negative,
        &leaf1(&tp),
        &leaf1(&tn),
    )
    .unwrap();
    loss.backward();
    assert_close(&loss, &expected["margin_mse"]["loss"], "margin_mse");
    assert_close(
        &student_positive.grad(),
        &expected["margin_mse"]["grad_sp"],
        "margin_mse dsp",
    );
    assert_close(
        &student_negative.grad(),
        &expected["margin_mse"]["grad_sn"],
        "margin_mse dsn",
    );

    let student_scores = leaf(&student);
    let loss = losses::kl_distillation(&student_scores, &leaf(&teacher), 2.0).unwrap();
    loss.backward();
    assert_close(&loss, &expected["kl"]["loss"], "kl");
    assert_close(
        &student_scores.grad(),
        &expected["kl"]["grad_student"],
        "kl dstudent",
    );
}

#[test]
fn bad_shapes_and_temperatures_are_errors() {
    let scores = Tensor::zeros([4, 3], (Kind::Float, tch::Device::Cpu));
    assert!(losses::info_nce(&scores, 0.05)
        .unwrap_err()
        .to_string()
        .contains("[4, 3]"));
    let square = Tensor::zeros([3, 3], (Kind::Float, tch::Device::Cpu));
    assert!(losses::info_nce(&square, 0.0)
        .unwrap_err()
        .to_string()
        .contains("temperature"));
    assert!(losses::kl_distillation(&square, &scores, 1.0).is_err());
}
