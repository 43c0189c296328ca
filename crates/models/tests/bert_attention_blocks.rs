//! Attention on sequences grouped by length (`AttentionBlocks`) computes what attention on the
//! whole padded batch computes: each sequence of a batch whose lengths differ widely gets the
//! same outputs and the same gradients as when it runs alone, with no adapter, with prefix tuning
//! (learned keys ahead of each block's) and with prompt tuning (virtual tokens in every block).

use ragtune_models::bert::{BertInput, BertModel, TokenGrid};
use ragtune_models::peft::{EncoderPeft, PeftConfig};
use ragtune_testkit::asset;
use tch::nn;
use tch::{Device, Kind, Tensor};

const LENGTHS: [i64; 5] = [4, 150, 6, 140, 9];

fn load() -> (nn::VarStore, BertModel) {
    BertModel::from_pretrained(&asset("bert-tiny"), Device::Cpu, Kind::Float).unwrap()
}

/// Token ids and a right-padded mask for sequences of `lengths`.
fn batch(lengths: &[i64]) -> (Tensor, Tensor) {
    let seq = lengths.iter().copied().max().unwrap();
    tch::manual_seed(3);
    let ids = Tensor::randint_low(
        1000,
        20000,
        [lengths.len() as i64, seq],
        (Kind::Int64, Device::Cpu),
    );
    let positions = Tensor::arange(seq, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let mask = positions
        .lt_tensor(&Tensor::from_slice(lengths).unsqueeze(1))
        .to_kind(Kind::Int64);
    (ids * &mask, mask)
}

fn input<'a>(ids: &'a Tensor, mask: &'a Tensor) -> BertInput<'a> {
    BertInput {
        input_ids: ids,
        attention_mask: mask,
        token_type_ids: None,
        output_mask: None,
    }
}

/// Batched against one by one: the largest difference of outputs at real positions, and of the
/// gradient of a weighted sum of them with respect to every trainable variable.
fn batched_against_alone(vs: &nn::VarStore, model: &BertModel) -> (f64, f64) {
    let (ids, mask) = batch(&LENGTHS);
    let virtual_tokens = model.virtual_tokens();
    let weights = Tensor::randn(
        [
            LENGTHS.len() as i64,
            virtual_tokens + ids.size()[1],
            model.hidden_size(),
        ],
        (Kind::Float, Device::Cpu),
    );
    let gradients =
        |loss: Tensor| Tensor::run_backward(&[loss], &vs.trainable_variables(), false, false);

    let batched = model.forward_t(&input(&ids, &mask), false);
    let output_mask = model.output_mask(&mask).unsqueeze(-1).to_kind(Kind::Float);
    let batched_grads = gradients((&batched * &weights * &output_mask).sum(Kind::Float));

    let mut output_diff = 0f64;
    let mut alone_loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
    for (i, &len) in LENGTHS.iter().enumerate() {
        let i = i as i64;
        let one_ids = ids.narrow(0, i, 1).narrow(1, 0, len);
        let one_mask = mask.narrow(0, i, 1).narrow(1, 0, len);
        let alone = model.forward_t(&input(&one_ids, &one_mask), false);
        let width = virtual_tokens + len;
        let same_rows = batched.narrow(0, i, 1).narrow(1, 0, width);
        output_diff = output_diff.max((&alone - same_rows).abs().max().double_value(&[]));
        alone_loss += (alone * weights.narrow(0, i, 1).narrow(1, 0, width)).sum(Kind::Float);
    }
    let alone_grads = gradients(alone_loss);
    let grad_diff = batched_grads
        .iter()
        .zip(&alone_grads)
        .map(|(a, b)| {
            // Floored: the key bias's gradient is zero up to rounding, which is all it shows.
            let scale = b.abs().max().double_value(&[]).max(1e-2);
            (a - b).abs().max().double_value(&[]) / scale
        })
        .fold(0f64, f64::max);
    (output_diff, grad_diff)
}

#[test]
fn a_batch_of_mixed_lengths_is_split_into_blocks() {
    let (_, mask) = batch(&LENGTHS);
    let grid = TokenGrid::new(&mask);
    let additive = Tensor::zeros(
        [LENGTHS.len() as i64, 1, 1, 150],
        (Kind::Float, Device::Cpu),
    );
    let shapes = grid.attention_blocks(&additive, 0).shapes();
    assert!(shapes.len() > 1, "expected several blocks, got {shapes:?}");
    assert_eq!(shapes.iter().map(|(count, _)| count).sum::<i64>(), 5);
    assert!(shapes.iter().any(|&(_, len)| len < 20), "{shapes:?}");
}

#[test]
fn blocks_give_each_sequence_what_it_gets_alone() {
    let (vs, model) = load();
    let (outputs, grads) = batched_against_alone(&vs, &model);
    assert!(outputs < 1e-5, "outputs differ by {outputs}");
    assert!(grads < 1e-3, "gradients differ by {grads} (relative)");
}

#[test]
fn blocks_keep_prefix_and_prompt_tuning_exact() {
    for (name, config) in [
        (
            "prefix",
            "method = \"prefix_tuning\"\nnum_virtual_tokens = 4\nprefix_projection = false",
        ),
        (
            "prompt",
            "method = \"prompt_tuning\"\nnum_virtual_tokens = 3",
        ),
    ] {
        let (mut vs, mut model) = load();
        vs.freeze();
        let config: PeftConfig = toml::from_str(config).unwrap();
        let adapter = EncoderPeft::new(&config, &model, Device::Cpu).unwrap();
        tch::manual_seed(5);
        tch::no_grad(|| {
            for (_, mut var) in adapter.var_store().variables() {
                let _ = var.f_add_(&(Tensor::randn(var.size(), (Kind::Float, Device::Cpu)) * 0.05));
            }
        });
        model.set_adapter(Some(adapter));
        // The base is frozen: the gradients compared are the adapter's.
        let adapter_vs = model.adapter().map(EncoderPeft::var_store).unwrap();
        let (outputs, grads) = batched_against_alone(adapter_vs, &model);
        assert!(outputs < 1e-5, "{name}: outputs differ by {outputs}");
        assert!(
            grads < 1e-3,
            "{name}: gradients differ by {grads} (relative)"
        );
    }
}
