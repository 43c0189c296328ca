//! The joint losses (LSR in both KL directions, the RAG-sequence marginal likelihood) and their
//! gradients against torch's own `F.kl_div` and `logsumexp` in float64
//! (tests/reference/joint_losses.py).

use ragtune_rag_joint::losses::{candidate_scores, lsr_loss, marginal_nll};
use ragtune_rag_joint::KlDirection;
use ragtune_retrieval::Similarity;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

const LM_TEMPERATURE: f64 = 0.1;

/// A tensor's values as nested JSON arrays of its shape.
fn to_json(t: &Tensor) -> Value {
    fn nest(values: &[f64], shape: &[i64]) -> Value {
        match shape {
            [] => json!(values[0]),
            [_] => json!(values),
            [n, rest @ ..] => {
                let step = values.len() / *n as usize;
                Value::Array(values.chunks(step).map(|c| nest(c, rest)).collect())
            }
        }
    }
    let flat: Vec<f64> = Vec::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    nest(&flat, &t.size())
}

fn flatten(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flatten).collect(),
        other => vec![other.as_f64().expect("a number")],
    }
}

/// `|ours − torch| ≤ atol + rtol·|torch|` element by element.
fn assert_close(actual: &Tensor, expected: &Value, atol: f64, rtol: f64, what: &str) {
    let actual: Vec<f64> = Vec::try_from(actual.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    let expected = flatten(expected);
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert!(
            (a - e).abs() <= atol + rtol * e.abs(),
            "{what}[{i}]: ragtune {a}, torch {e}"
        );
    }
}

fn leaf(t: &Tensor) -> Tensor {
    t.detach().copy().set_requires_grad(true)
}

#[test]
fn lsr_and_marginal_likelihood_match_torch() {
    let (b, k, dim) = (3, 4, 5);
    let f32_cpu = (Kind::Float, Device::Cpu);
    tch::manual_seed(11);
    let queries = Tensor::randn([b, dim], f32_cpu);
    // Passages near their question's query, so cosine scores spread over a useful range.
    let passages = queries.unsqueeze(1) + Tensor::randn([b, k, dim], f32_cpu);
    // Like mean answer log-probabilities: in [-3, -0.1].
    let lm_scores = Tensor::rand([b, k], f32_cpu) * -2.9 - 0.1;
    // Like summed answer log-probabilities.
    let answer_logps = Tensor::rand([b, k], f32_cpu) * -12.0 - 0.5;
    let cases = [
        (Similarity::Cosine, "cosine", 0.05),
        (Similarity::Dot, "dot", 1.0),
    ];
    let expected = ragtune_testkit::reference(
        "joint_losses.py",
        &json!({
            "queries": to_json(&queries), "passages": to_json(&passages),
            "lm_scores": to_json(&lm_scores), "answer_logps": to_json(&answer_logps),
            "lm_temperature": LM_TEMPERATURE,
            "cases": cases.iter().map(|(_, name, t)| json!({"similarity": name, "temperature": t})).collect::<Vec<_>>(),
        }),
    );

    for (similarity, name, temperature) in cases {
        let reference = &expected[name];
        let scores = candidate_scores(&queries, &passages, similarity);
        assert_close(
            &scores,
            &reference["scores"],
            1e-6,
            1e-6,
            &format!("{name} scores"),
        );
        for (direction, key) in [
            (KlDirection::TargetToRetriever, "kl_q_p"),
            (KlDirection::RetrieverToTarget, "kl_p_q"),
        ] {
            let what = format!("{key}/{name}");
            let q = leaf(&queries);
            let lm = leaf(&lm_scores);
            let scores = candidate_scores(&q, &passages, similarity);
            let loss = lsr_loss(&scores, &lm, temperature, LM_TEMPERATURE, direction).unwrap();
            loss.backward();
            let want = &reference[key];
            assert_close(&loss, &want["loss"], 1e-6, 1e-6, &what);
            assert_close(
                &q.grad(),
                &want["grad_q"],
                1e-5,
                1e-5,
                &format!("{what} dq"),
            );
            // The LM's scores are a target: no gradient reaches them.
            let lm_grad = lm.grad();
            assert!(
                !lm_grad.defined() || lm_grad.abs().max().double_value(&[]) == 0.0,
                "{what}: the LM scores got a gradient"
            );
        }

        let what = format!("marginal/{name}");
        let (q, ell) = (leaf(&queries), leaf(&answer_logps));
        let loss = marginal_nll(
            &candidate_scores(&q, &passages, similarity),
            &ell,
            temperature,
        )
        .unwrap();
        loss.backward();
        let want = &reference["marginal"];
        assert_close(&loss, &want["loss"], 1e-6, 1e-6, &what);
        assert_close(
            &q.grad(),
            &want["grad_q"],
            1e-5,
            1e-5,
            &format!("{what} dq"),
        );
        assert_close(
            &ell.grad(),
            &want["grad_answer_logps"],
            1e-6,
            1e-5,
            &format!("{what} dℓ"),
        );
    }
}

#[test]
fn mismatched_shapes_are_errors() {
    let s = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
    let t = Tensor::zeros([2, 4], (Kind::Float, Device::Cpu));
    assert!(lsr_loss(&s, &t, 0.05, 0.1, KlDirection::TargetToRetriever).is_err());
    assert!(marginal_nll(&s, &t, 0.05).is_err());
}
