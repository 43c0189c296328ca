//! BERTScore math against bert-score's own `get_idf_dict` and `greedy_cos_idf` on supplied token
//! vectors (with and without idf). The model-backed parity test lives where tch is allowed.

use ragtune_eval::bertscore::{score_encoded, EncodedText};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const CLS: u32 = 101;
const SEP: u32 = 102;

fn text(words: usize, rng: &mut StdRng) -> EncodedText {
    let mut token_ids = vec![CLS];
    token_ids.extend((0..words).map(|_| rng.gen_range(1000..1030)));
    token_ids.push(SEP);
    // Non-negative components keep every cosine positive, so bert-score's zero padding never wins a max.
    let vectors = token_ids
        .iter()
        .map(|_| (0..8).map(|_| rng.gen_range(0.0f32..1.0)).collect())
        .collect();
    let special = token_ids.iter().map(|&t| t == CLS || t == SEP).collect();
    EncodedText {
        token_ids,
        vectors,
        special,
    }
}

#[test]
fn bertscore_matches_bert_score_functions() {
    let mut rng = StdRng::seed_from_u64(21);
    let mut candidates = Vec::new();
    let mut references = Vec::new();
    for i in 0..60 {
        candidates.push(text(
            if i % 20 == 0 { 0 } else { rng.gen_range(1..25) },
            &mut rng,
        ));
        references.push(text(rng.gen_range(1..25), &mut rng));
    }
    let pairs: Vec<_> = candidates
        .iter()
        .zip(&references)
        .map(|(c, r)| json!({"cand_ids": c.token_ids, "cand_vecs": c.vectors, "ref_ids": r.token_ids, "ref_vecs": r.vectors}))
        .collect();
    let reference = ragtune_testkit::reference(
        "eval_bertscore.py",
        &json!({"pairs": pairs, "cls": CLS, "sep": SEP}),
    );
    for use_idf in [false, true] {
        let ours = score_encoded(&candidates, &references, use_idf).unwrap();
        let theirs = reference[if use_idf { "idf" } else { "plain" }]
            .as_array()
            .unwrap();
        assert_eq!(theirs.len(), ours.len());
        for (i, (o, t)) in ours.iter().zip(theirs).enumerate() {
            for (name, ov, tv) in [
                ("P", o.precision, &t[0]),
                ("R", o.recall, &t[1]),
                ("F", o.f1, &t[2]),
            ] {
                let tv = tv.as_f64().unwrap();
                assert!(
                    (ov - tv).abs() <= 1e-6,
                    "pair {i} idf={use_idf} {name}: ours {ov}, bert-score {tv}"
                );
            }
        }
        assert_eq!(ours[0].f1, 0.0, "an empty candidate scores 0");
    }
}

#[test]
fn bertscore_rejects_inconsistent_encodings() {
    let mut rng = StdRng::seed_from_u64(1);
    let good = text(3, &mut rng);
    let mut bad = good.clone();
    bad.vectors.pop();
    assert!(score_encoded(&[bad], std::slice::from_ref(&good), false).is_err());
    assert!(score_encoded(std::slice::from_ref(&good), &[], false).is_err());
}
