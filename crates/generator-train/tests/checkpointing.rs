//! Gradient checkpointing: the gradients with recomputation in the backward pass equal those of
//! the plain backward pass, for LoRA with dropout (the recomputation must replay the RNG), full
//! fine-tuning, packed rows, and bf16 autocast.

mod common;

use common::tiny_llama;
use ragtune_generator_train::loss::completion_loss;
use ragtune_generator_train::packing::collate_packed;
use ragtune_generator_train::sft::{collate, packed_loss, SftExample};
use ragtune_models::llama::Llama;
use ragtune_models::peft::{self, Peft, PeftConfig};
use ragtune_trainer::precision::autocast_bf16;
use tch::{nn, Device, Tensor};

/// torch's default generator is global and the tests of this file run on parallel threads; each
/// test holds this lock so that its seeded runs see the same random streams.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn examples() -> Vec<SftExample> {
    common::synthetic_examples(&[(9, 4), (5, 2), (13, 7), (7, 3)])
}

fn take_grads(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut out: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, v)| v.requires_grad())
        .map(|(k, mut v)| {
            let g = v.grad().copy();
            v.zero_grad();
            (k, g)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Loss and gradients of `loss_fn` with checkpointing off, then on, from the same torch seed.
fn compare(
    model: &mut Llama,
    vs: &nn::VarStore,
    tolerance: f64,
    loss_fn: impl Fn(&Llama) -> Tensor,
) {
    let mut runs = vec![];
    for on in [false, true] {
        model.set_gradient_checkpointing(on);
        tch::manual_seed(7);
        let loss = loss_fn(model);
        loss.backward();
        runs.push((loss.double_value(&[]), take_grads(vs)));
    }
    model.set_gradient_checkpointing(false);
    let (plain, ckpt) = (&runs[0], &runs[1]);
    assert!(
        (plain.0 - ckpt.0).abs() <= tolerance,
        "loss {} vs {}",
        plain.0,
        ckpt.0
    );
    assert!(!plain.1.is_empty());
    for ((name, g), (_, h)) in plain.1.iter().zip(&ckpt.1) {
        let scale = g.abs().max().double_value(&[]);
        let diff = (g - h).abs().max().double_value(&[]);
        assert!(scale > 0.0, "{name}: no gradient without checkpointing");
        assert!(
            diff <= tolerance * scale.max(1.0),
            "{name}: gradients differ by {diff} (scale {scale})"
        );
    }
}

fn lora(model: &Llama, dropout: f64) -> Peft {
    let config: PeftConfig = toml::from_str(&format!(
        "method = \"lora\"\nr = 4\nlora_alpha = 8\nlora_dropout = {dropout}\ntarget_modules = \"all-linear\""
    ))
    .unwrap();
    let adapter = Peft::new(&config, model, Device::Cpu, None).unwrap();
    tch::no_grad(|| {
        for (_, v) in adapter.var_store().variables() {
            v.shallow_clone().copy_(&(Tensor::randn_like(&v) * 0.1));
        }
    });
    adapter
}

fn padded_loss(model: &Llama, adapter: Option<&Peft>, data: &[SftExample]) -> Tensor {
    let rows: Vec<&SftExample> = data.iter().collect();
    let (ids, attention, completion) = collate(&rows, 0, Device::Cpu);
    let hidden = peft::forward_hidden(model, adapter, &ids, Some(&attention)).unwrap();
    completion_loss(model, &hidden, &ids, &completion, 256)
        .unwrap()
        .0
}

#[test]
fn lora_gradients_with_dropout_match_with_and_without_checkpointing() {
    let _rng = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (vs, mut model) = tiny_llama();
    let mut frozen = vs;
    frozen.freeze();
    let adapter = lora(&model, 0.2);
    adapter.attach(&mut model);
    adapter.set_training(true);
    let data = examples();
    compare(&mut model, adapter.var_store(), 1e-5, |m| {
        padded_loss(m, Some(&adapter), &data)
    });
    // Packed rows (block-diagonal mask) go through the same checkpointed layers.
    let rows = vec![vec![&data[0], &data[1]], vec![&data[2], &data[3]]];
    compare(&mut model, adapter.var_store(), 1e-5, |m| {
        packed_loss(m, &collate_packed(&rows, 0, Device::Cpu))
            .unwrap()
            .0
    });
    // bf16 autocast is replayed in the recomputation.
    compare(&mut model, adapter.var_store(), 1e-5, |m| {
        autocast_bf16(Device::Cpu, true, || padded_loss(m, Some(&adapter), &data))
    });
}

#[test]
fn full_fine_tuning_gradients_match_with_and_without_checkpointing() {
    let _rng = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (vs, mut model) = tiny_llama();
    let data = examples();
    compare(&mut model, &vs, 1e-5, |m| padded_loss(m, None, &data));
}
