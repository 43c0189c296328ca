//! Packing: best-fit decreasing against a direct implementation of its definition, and a packed
//! batch's loss and LoRA gradients against the same examples run unpacked (one per padded row).

mod common;

use common::tiny_llama;
use ragtune_generator_train::loss::completion_loss;
use ragtune_generator_train::packing::{best_fit_decreasing, collate_packed};
use ragtune_generator_train::sft::{collate, packed_loss, SftExample};
use ragtune_models::peft::{Peft, PeftConfig};
use tch::{nn, Device, Tensor};

/// BFD as defined: longest first (ties by index); each item into the bin with the least room
/// that still fits it (ties: the older bin), else a new bin.
fn bfd_by_definition(lengths: &[usize], capacity: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), i));
    let (mut bins, mut room): (Vec<Vec<usize>>, Vec<usize>) = (vec![], vec![]);
    for i in order {
        match (0..bins.len())
            .filter(|&b| room[b] >= lengths[i])
            .min_by_key(|&b| (room[b], b))
        {
            Some(b) => {
                bins[b].push(i);
                room[b] -= lengths[i];
            }
            None => {
                bins.push(vec![i]);
                room.push(capacity - lengths[i]);
            }
        }
    }
    bins
}

#[test]
fn best_fit_decreasing_puts_each_item_into_the_fullest_bin_that_fits() {
    // First-fit decreasing would put item 1 into bin 0 here; best fit picks the fuller bin 1.
    assert_eq!(
        best_fit_decreasing(&[8, 1, 1, 4, 5], 10).unwrap(),
        vec![vec![0, 2], vec![4, 3, 1]]
    );
    let mut state = 12345u64;
    let mut next = |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    for _ in 0..200 {
        let n = next(40) as usize;
        let capacity = 16 + next(100) as usize;
        let lengths: Vec<usize> = (0..n).map(|_| 1 + next(capacity as u64) as usize).collect();
        let bins = best_fit_decreasing(&lengths, capacity).unwrap();
        assert_eq!(
            bins,
            bfd_by_definition(&lengths, capacity),
            "{lengths:?} in {capacity}"
        );
        let mut seen: Vec<usize> = bins.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        assert!(bins
            .iter()
            .all(|b| b.iter().map(|&i| lengths[i]).sum::<usize>() <= capacity));
    }
    let err = best_fit_decreasing(&[3, 11], 10).unwrap_err().to_string();
    assert!(err.contains("example 1") && err.contains("11"), "{err}");
}

fn examples() -> Vec<SftExample> {
    common::synthetic_examples(&[(9, 4), (5, 2), (13, 7), (3, 1), (7, 3), (11, 8), (4, 2)])
}

fn grads(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut out: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, v)| v.requires_grad())
        .map(|(k, v)| (k, v.grad().copy()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_packed_batch_has_the_loss_and_gradients_of_the_same_examples_unpacked() {
    let (vs, mut model) = tiny_llama();
    let mut frozen = vs;
    frozen.freeze();
    let config: PeftConfig =
        toml::from_str("method = \"lora\"\nr = 4\nlora_alpha = 8\ntarget_modules = \"all-linear\"")
            .unwrap();
    let adapter = Peft::new(&config, &model, Device::Cpu, None).unwrap();
    tch::no_grad(|| {
        for (_, v) in adapter.var_store().variables() {
            v.shallow_clone().copy_(&(Tensor::randn_like(&v) * 0.1));
        }
    });
    adapter.attach(&mut model);
    let data = examples();
    let lengths: Vec<usize> = data.iter().map(|e| e.input_ids.len()).collect();
    let bins = best_fit_decreasing(&lengths, 20).unwrap();
    assert!(bins.len() < data.len(), "{bins:?}: nothing was packed");
    let rows: Vec<Vec<&SftExample>> = bins
        .iter()
        .map(|b| b.iter().map(|&i| &data[i]).collect())
        .collect();
    let packed = collate_packed(&rows, 0, Device::Cpu);
    let (packed_loss_t, packed_n) = packed_loss(&model, &packed).unwrap();
    packed_loss_t.backward();
    let packed_grads = grads(adapter.var_store());
    for (_, mut v) in adapter.var_store().variables() {
        v.zero_grad();
    }

    let all: Vec<&SftExample> = data.iter().collect();
    let (ids, attention, completion) = collate(&all, 0, Device::Cpu);
    let hidden = model
        .forward_hidden(&ids, Some(&attention), None, None)
        .unwrap();
    let (loss, n) = completion_loss(&model, &hidden, &ids, &completion, 256).unwrap();
    loss.backward();
    let plain_grads = grads(adapter.var_store());

    assert_eq!(packed_n, n);
    let (a, b) = (packed_loss_t.double_value(&[]), loss.double_value(&[]));
    assert!((a - b).abs() <= 1e-5, "packed {a} vs unpacked {b}");
    assert!(!plain_grads.is_empty());
    for ((name, g), (_, h)) in packed_grads.iter().zip(&plain_grads) {
        let diff = (g - h).abs().max().double_value(&[]);
        let scale = h.abs().max().double_value(&[]);
        assert!(scale > 0.0, "{name}: no gradient");
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "{name}: gradients differ by {diff}"
        );
    }
    // Positions restart per example and padding is segment 0.
    let pos = Vec::<i64>::try_from(packed.position_ids.get(0)).unwrap();
    let first = rows[0][0].input_ids.len();
    assert_eq!(pos[first], 0);
    assert_eq!(pos[first - 1], first as i64 - 1);
}
