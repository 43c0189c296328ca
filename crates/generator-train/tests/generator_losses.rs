//! DPO losses against TRL 1.16's formulas; the completion-only loss against a plain full-vocabulary
//! cross-entropy on a tiny random Llama; the max-length policy and collation.

mod common;

use common::tiny_llama;
use ragtune_generator_train::loss::{completion_loss, dpo_loss, sequence_logps, DpoLossKind};
use ragtune_generator_train::sft::{collate, SftExample};
use ragtune_testkit::reference;
use serde_json::json;
use tch::{Device, Kind, Tensor};

fn vec_of(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap()
}

#[test]
fn dpo_losses_match_trl() {
    tch::manual_seed(3);
    let n = 16;
    let logps = |scale: f64| Tensor::randn([n], (Kind::Double, Device::Cpu)) * scale - 40.0;
    let (pc, pr, rc, rr) = (logps(5.0), logps(5.0), logps(5.0), logps(5.0));
    let cl = Tensor::randint_low(1, 60, [n], (Kind::Int64, Device::Cpu)).to_kind(Kind::Double);
    let rl = Tensor::randint_low(1, 60, [n], (Kind::Int64, Device::Cpu)).to_kind(Kind::Double);
    let beta = 0.1;
    let want = reference(
        "generator_dpo.py",
        &json!({"beta": beta, "policy_chosen": vec_of(&pc), "policy_rejected": vec_of(&pr),
                "reference_chosen": vec_of(&rc), "reference_rejected": vec_of(&rr),
                "chosen_len": vec_of(&cl), "rejected_len": vec_of(&rl)}),
    );
    for (kind, name) in [
        (DpoLossKind::Sigmoid, "sigmoid"),
        (DpoLossKind::Hinge, "hinge"),
        (DpoLossKind::Ipo, "ipo"),
    ] {
        let out = dpo_loss(kind, beta, &pc, &pr, &rc, &rr, &cl, &rl);
        let ours = vec_of(&out.losses);
        let theirs: Vec<f64> = serde_json::from_value(want[name].clone()).unwrap();
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(
                (a - b).abs() < 1e-9 * b.abs().max(1.0),
                "{name}: {a} vs {b}"
            );
        }
        let chosen: Vec<f64> = serde_json::from_value(want["chosen_rewards"].clone()).unwrap();
        for (a, b) in vec_of(&out.chosen_rewards).iter().zip(&chosen) {
            assert!((a - b).abs() < 1e-9);
        }
        let acc = out.reward_accuracy();
        assert!((0.0..=1.0).contains(&acc));
    }
}

#[test]
fn completion_loss_is_masked_full_vocabulary_cross_entropy() {
    let (_vs, model) = tiny_llama();
    let a = SftExample {
        id: "a".into(),
        input_ids: vec![5, 6, 7, 8, 9, 10],
        prompt_len: 3,
    };
    let b = SftExample {
        id: "b".into(),
        input_ids: vec![11, 12, 13, 14],
        prompt_len: 2,
    };
    let (ids, attention, completion) = collate(&[&a, &b], 0, Device::Cpu);
    assert_eq!(
        Vec::<i64>::try_from(completion.reshape([-1])).unwrap(),
        vec![0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0]
    );
    let hidden = model
        .forward_hidden(&ids, Some(&attention), None, None)
        .unwrap();
    // Chunks of 2 rows must give what one pass over all rows gives.
    let (loss, n) = completion_loss(&model, &hidden, &ids, &completion, 2).unwrap();
    assert_eq!(n, 5);
    let logits = model.logits(&hidden).log_softmax(-1, Kind::Float);
    let mut total = 0.0;
    for (row, ex) in [&a, &b].iter().enumerate() {
        for t in ex.prompt_len..ex.input_ids.len() {
            total -= logits.double_value(&[row as i64, t as i64 - 1, ex.input_ids[t]]);
        }
    }
    let want = total / 5.0;
    assert!(
        (loss.double_value(&[]) - want).abs() < 1e-5,
        "{} vs {want}",
        loss.double_value(&[])
    );
    let (sums, counts) = sequence_logps(&model, &hidden, &ids, &completion, 3);
    assert_eq!(vec_of(&counts), vec![3.0, 2.0]);
    assert!((sums.sum(Kind::Double).double_value(&[]) + total).abs() < 1e-4);
}

#[test]
fn dpo_steps_on_a_lora_adapter_raise_reward_accuracy() {
    use ragtune_generator_train::dpo::{batch_dpo, DpoSettings, PairExample};
    use ragtune_models::peft::{Peft, PeftConfig};
    let (vs, mut model) = tiny_llama();
    let mut frozen = vs;
    frozen.freeze();
    let config: PeftConfig =
        toml::from_str("method = \"lora\"\nr = 4\nlora_alpha = 8\ntarget_modules = \"all-linear\"")
            .unwrap();
    let adapter = Peft::new(&config, &model, Device::Cpu, None).unwrap();
    let pair = |i: i64| PairExample {
        id: i.to_string(),
        chosen: SftExample {
            id: "c".into(),
            input_ids: vec![3 + i, 4, 5, 20, 21, 22],
            prompt_len: 3,
        },
        rejected: SftExample {
            id: "r".into(),
            input_ids: vec![3 + i, 4, 5, 40, 41],
            prompt_len: 3,
        },
        reference: None,
    };
    let mut pairs: Vec<PairExample> = (0..4).map(pair).collect();
    // Reference = the base with the adapter off; a LoRA with B = 0 gives equal log-probs, so
    // every reward starts at 0 (up to padding-dependent rounding).
    for p in pairs.iter_mut() {
        let rows = [&p.chosen, &p.rejected];
        let (ids, attention, completion) = collate(&rows, 0, Device::Cpu);
        let hidden = tch::no_grad(|| {
            model
                .forward_hidden(&ids, Some(&attention), None, None)
                .unwrap()
        });
        let (sums, _) = sequence_logps(&model, &hidden, &ids, &completion, 4);
        p.reference = Some((sums.double_value(&[0]), sums.double_value(&[1])));
    }
    adapter.attach(&mut model);
    let lm_pairs: Vec<&PairExample> = pairs.iter().collect();
    let settings = DpoSettings::default();
    let lm = ragtune_models::llama_load::CausalLm {
        config: model.config.clone(),
        var_store: frozen,
        model,
        tokenizer: tiny_tokenizer(),
    };
    let start = batch_dpo(&lm, Some(&adapter), &lm_pairs, &settings, Device::Cpu).unwrap();
    assert!(start.chosen_rewards.abs().max().double_value(&[]) < 1e-4);
    assert!(start.rejected_rewards.abs().max().double_value(&[]) < 1e-4);
    let mut opt = {
        use tch::nn::OptimizerConfig;
        tch::nn::Adam::default()
            .build(adapter.var_store(), 1e-2)
            .unwrap()
    };
    for _ in 0..20 {
        let out = batch_dpo(&lm, Some(&adapter), &lm_pairs, &settings, Device::Cpu).unwrap();
        opt.backward_step(&out.loss());
    }
    let end = batch_dpo(&lm, Some(&adapter), &lm_pairs, &settings, Device::Cpu).unwrap();
    assert_eq!(end.reward_accuracy(), 1.0);
    assert!(end.reward_margin() > 0.0);
    assert!(end.loss().double_value(&[]) < start.loss().double_value(&[]));
    // The base weights stayed frozen: no gradient reached them.
    for (name, v) in lm.var_store.variables() {
        assert!(!v.requires_grad(), "{name} is trainable");
    }
}

fn tiny_tokenizer() -> ragtune_models::llama_tokenizer::LlamaTokenizer {
    let dir =
        ragtune_testkit::asset("smollm2-135m-instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let gguf = ragtune_models::gguf::GgufFile::open(&dir).unwrap();
    ragtune_models::gguf_tokenizer::tokenizer_from_gguf(&gguf).unwrap()
}
