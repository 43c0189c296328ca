//! BERTScore end to end against the bert-score package: our BERT encoder (ragtune-models) supplies
//! the token vectors of layer 4 of all-MiniLM-L6-v2, eval does the matching and idf weighting.

mod common;

use ragtune_eval::bertscore::{bert_score, EncodedText, TokenEncoder};
use ragtune_models::bert::BertModel;
use ragtune_models::tokenize::{BertTokenizer, EncodedBatch};
use serde_json::json;
use tch::{Device, Kind, Tensor};

const NUM_LAYERS: usize = 4;

struct LayerEncoder {
    model: BertModel,
    tokenizer: BertTokenizer,
    special: [i64; 2],
}

impl TokenEncoder for LayerEncoder {
    type Error = ragtune_models::ModelError;

    fn encode(&mut self, texts: &[String]) -> Result<Vec<EncodedText>, Self::Error> {
        // bert-score strips each sentence before tokenizing.
        let trimmed: Vec<&str> = texts.iter().map(|t| t.trim()).collect();
        let tokenized = self.tokenizer.tokenize(&trimmed)?;
        let refs: Vec<_> = tokenized.iter().collect();
        let batch = EncodedBatch::pad(&refs, self.tokenizer.pad_id(), Device::Cpu);
        let hidden = tch::no_grad(|| self.model.hidden_states_t(&batch.as_input(), false))
            .swap_remove(NUM_LAYERS);
        Ok(tokenized
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let rows: Tensor = hidden
                    .get(i as i64)
                    .narrow(0, 0, t.ids.len() as i64)
                    .to_kind(Kind::Float);
                let vectors: Vec<Vec<f32>> = (0..t.ids.len() as i64)
                    .map(|j| Vec::<f32>::try_from(rows.get(j)).expect("f32 row"))
                    .collect();
                EncodedText {
                    token_ids: t.ids.iter().map(|&id| id as u32).collect(),
                    vectors,
                    special: t.ids.iter().map(|id| self.special.contains(id)).collect(),
                }
            })
            .collect())
    }
}

#[test]
fn bertscore_matches_bert_score_package() {
    let dir = ragtune_testkit::asset("all-MiniLM-L6-v2");
    let (_vs, model) = BertModel::from_pretrained(&dir, Device::Cpu, Kind::Float).unwrap();
    let tokenizer = BertTokenizer::from_file(&dir.join("tokenizer.json"), 512).unwrap();
    let id = |t: &str| i64::from(tokenizer.inner().token_to_id(t).expect("special token"));
    let special = [id("[CLS]"), id("[SEP]")];
    let mut encoder = LayerEncoder {
        model,
        tokenizer,
        special,
    };

    // bert-score 0.3.13 cannot encode an empty string under transformers 5 (it calls the removed
    // `build_inputs_with_special_tokens`), so empty texts stay out of this comparison; the empty
    // case is covered in tests/bertscore.rs.
    let cases: Vec<_> = common::text_cases(48, 13)
        .into_iter()
        .filter(|c| !c.prediction.trim().is_empty() && !c.references[0].trim().is_empty())
        .collect();
    let candidates: Vec<String> = cases.iter().map(|c| c.prediction.clone()).collect();
    let references: Vec<String> = cases.iter().map(|c| c.references[0].clone()).collect();
    let reference = ragtune_testkit::reference(
        "eval_bertscore_model.py",
        &json!({"model": dir, "num_layers": NUM_LAYERS, "candidates": candidates, "references": references}),
    );
    for use_idf in [false, true] {
        let ours = bert_score(&mut encoder, &candidates, &references, use_idf).unwrap();
        let theirs = reference[if use_idf { "idf" } else { "plain" }]
            .as_array()
            .unwrap();
        assert_eq!(ours.len(), theirs.len());
        for (i, (o, t)) in ours.iter().zip(theirs).enumerate() {
            for (name, ov, tv) in [
                ("P", o.precision, &t[0]),
                ("R", o.recall, &t[1]),
                ("F", o.f1, &t[2]),
            ] {
                let tv = tv.as_f64().unwrap();
                assert!(
                    (ov - tv).abs() <= 1e-5,
                    "pair {i} idf={use_idf} {name}: ours {ov}, bert-score {tv} ({:?})",
                    candidates[i]
                );
            }
        }
    }
}
