//! GradCache gives the gradients of the plain full-batch loss, on a real (tiny) BERT encoder.

use ragtune_models::encoder::SentenceEncoder;
use ragtune_retriever_train::gradcache::{self, Side};
use ragtune_retriever_train::losses::{self, Similarity};
use ragtune_retriever_train::Result;
use tch::{Device, Kind, Tensor};

fn gradients(encoder: &SentenceEncoder) -> Vec<(String, Tensor)> {
    let mut grads: Vec<(String, Tensor)> = encoder
        .var_store()
        .variables()
        .into_iter()
        .map(|(name, var)| {
            let grad = var.grad();
            let grad = if grad.defined() {
                grad.copy()
            } else {
                var.zeros_like()
            };
            (name, grad)
        })
        .collect();
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    grads
}

fn zero_gradients(encoder: &SentenceEncoder) {
    for mut var in encoder.var_store().trainable_variables() {
        var.zero_grad();
    }
}

#[test]
fn chunked_gradients_equal_full_batch_gradients() {
    let encoder = SentenceEncoder::load(
        &ragtune_testkit::asset("bert-tiny"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let queries: Vec<String> = (0..7)
        .map(|i| format!("how long does permit number {i} take to approve"))
        .collect();
    let passages: Vec<String> = (0..9)
        .map(|i| {
            format!(
                "passage {i}: the council reviews building permit {} within {} weeks",
                i * 3,
                i + 1
            )
        })
        .collect();
    // Two passages beyond the queries act as hard negatives shared by the batch.
    let loss = |reps: &[Tensor]| -> Result<Tensor> {
        losses::symmetric_info_nce(
            &Similarity::Cosine.matrix(&reps[0], &reps[1]),
            losses::DEFAULT_TEMPERATURE,
        )
    };

    let q_batch = encoder.tokenize_batch(&queries).unwrap();
    let p_batch = encoder.tokenize_batch(&passages).unwrap();
    let full = loss(&[
        encoder.forward_t(&q_batch, false),
        encoder.forward_t(&p_batch, false),
    ])
    .unwrap();
    full.backward();
    let expected = gradients(&encoder);
    zero_gradients(&encoder);

    let chunk = 3;
    let side = |texts: &[String]| {
        let ranges = gradcache::chunk_ranges(texts.len(), chunk);
        let texts = texts.to_vec();
        let encoder = &encoder;
        Side::new(ranges.len(), move |c| {
            let batch = encoder.tokenize_batch(&texts[ranges[c].clone()])?;
            Ok(encoder.forward_t(&batch, false))
        })
    };
    let value =
        gradcache::backward(&[side(&queries), side(&passages)], 11, |reps| loss(reps)).unwrap();
    assert!(
        (value - full.double_value(&[])).abs() < 1e-5,
        "loss {value} vs {}",
        full.double_value(&[])
    );
    let actual = gradients(&encoder);
    let mut compared = 0;
    for ((name, e), (_, a)) in expected.iter().zip(&actual) {
        let diff = (e - a).abs().max().double_value(&[]);
        assert!(diff <= 1e-5, "{name}: max |grad difference| {diff}");
        compared += (e.abs().max().double_value(&[]) > 0.0) as usize;
    }
    assert!(
        compared > 10,
        "only {compared} parameters received gradients"
    );
}
