//! AdamW, gradient clipping and the schedules against torch and transformers, run at test time
//! through tests/reference/trainer_{adamw,schedule}.py.

use ragtune_trainer::{clip_grad_norm, AdamW, Schedule, ScheduleKind, TrainableParam};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.detach().flatten(0, -1)).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs `steps` AdamW steps (optionally with clipping) here and in torch from the same start and
/// the same gradients, and compares parameters, both moments and the gradient norms.
/// `fused`: our run goes through torch's fused kernel, the reference through torch's default
/// single-tensor path; they agree to rounding.
fn compare_with_torch(max_grad_norm: Option<f64>, fused: bool) {
    tch::manual_seed(7);
    let shapes: [(&str, &[i64], f64, f64); 3] = [
        ("encoder.layer.0.dense.weight", &[4, 3], 0.5, 0.01),
        ("encoder.layer.0.dense.bias", &[4], 0.5, 0.0),
        ("head.weight", &[2, 4], 1.0, 0.1),
    ];
    let steps = 12;
    let lrs: Vec<f64> = (0..steps)
        .map(|s| 1e-2 * (1.0 + s as f64) / steps as f64)
        .collect();
    let params: Vec<TrainableParam> = shapes
        .iter()
        .map(|(name, shape, lr_scale, weight_decay)| TrainableParam {
            name: name.to_string(),
            tensor: Tensor::randn(*shape, (Kind::Float, Device::Cpu)).set_requires_grad(true),
            lr_scale: *lr_scale,
            weight_decay: *weight_decay,
        })
        .collect();
    let initial: Vec<Value> = params
        .iter()
        .zip(&shapes)
        .map(|(p, (_, shape, lr_scale, wd))| {
            json!({"name": p.name, "shape": shape, "data": values(&p.tensor), "lr_scale": lr_scale, "weight_decay": wd})
        })
        .collect();
    // Gradients of very different scales, so that clipping bites on some steps and not others.
    let grads: Vec<Vec<Tensor>> = (0..steps)
        .map(|s| {
            shapes
                .iter()
                .map(|(_, shape, _, _)| {
                    Tensor::randn(*shape, (Kind::Float, Device::Cpu)) * (0.05 + (s % 4) as f64)
                })
                .collect()
        })
        .collect();
    let tensors: Vec<Tensor> = params.iter().map(|p| p.tensor.shallow_clone()).collect();
    let mut optimizer = AdamW::new(params, (0.9, 0.98), 1e-6).with_fused(fused);
    let mut norms = Vec::new();
    for (s, step_grads) in grads.iter().enumerate() {
        optimizer.zero_grad();
        // d/dp sum(p * g) = g exactly.
        let loss = tensors
            .iter()
            .zip(step_grads)
            .map(|(p, g)| (p * g).sum(Kind::Float))
            .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
        loss.backward();
        if let Some(max_norm) = max_grad_norm {
            norms.push(clip_grad_norm(&optimizer.grads(), max_norm));
        }
        optimizer.step(lrs[s]).unwrap();
    }
    let reference = ragtune_testkit::reference(
        "trainer_adamw.py",
        &json!({
            "params": initial,
            "grads": grads.iter().map(|gs| gs.iter().map(values).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "lrs": lrs, "betas": [0.9, 0.98], "eps": 1e-6, "max_grad_norm": max_grad_norm,
        }),
    );
    let state: std::collections::HashMap<String, Tensor> =
        optimizer.state_tensors().into_iter().collect();
    for (p, (name, ..)) in tensors.iter().zip(&shapes) {
        let d = max_abs_diff(&values(p), &floats(&reference["params"][name]));
        assert!(d <= 1e-6, "{name}: params differ from torch by {d}");
        for moment in ["exp_avg", "exp_avg_sq"] {
            let ours = values(&state[&format!("{moment}.{name}")]);
            let d = max_abs_diff(&ours, &floats(&reference[moment][name]));
            assert!(d <= 1e-6, "{name}: {moment} differs from torch by {d}");
        }
    }
    assert!(optimizer.steps().values().all(|&s| s == steps as u64));
    if max_grad_norm.is_some() {
        let theirs = floats(&reference["grad_norms"]);
        let ours: Vec<f32> = norms.iter().map(|&n| n as f32).collect();
        assert!(
            max_abs_diff(&ours, &theirs) <= 1e-5,
            "grad norms: {ours:?} vs {theirs:?}"
        );
        assert!(ours.iter().any(|&n| n > 1.0) && ours.iter().any(|&n| n < 1.0));
    }
}

#[test]
fn adamw_matches_torch() {
    compare_with_torch(None, false);
}

#[test]
fn adamw_with_clipping_matches_torch() {
    compare_with_torch(Some(1.0), false);
}

#[test]
fn fused_adamw_matches_torch() {
    compare_with_torch(Some(1.0), true);
}

#[test]
fn schedules_match_transformers() {
    let cases = [
        (ScheduleKind::Constant, 5, 20, 0.5),
        (ScheduleKind::Linear, 5, 20, 0.5),
        (ScheduleKind::Linear, 0, 17, 0.5),
        (ScheduleKind::Cosine, 3, 25, 0.5),
        (ScheduleKind::Cosine, 4, 30, 1.5),
    ];
    let input: Vec<Value> = cases
        .iter()
        .map(|(kind, warmup, total, cycles)| {
            json!({"kind": kind, "warmup_steps": warmup, "total_steps": total, "num_cycles": cycles, "steps": total + 3})
        })
        .collect();
    let reference = ragtune_testkit::reference("trainer_schedule.py", &json!(input));
    for ((kind, warmup, total, cycles), expected) in cases.iter().zip(reference.as_array().unwrap())
    {
        let schedule = Schedule::new(*kind, Some(*warmup), 0.0, *total, *cycles);
        for (step, want) in expected.as_array().unwrap().iter().enumerate() {
            let got = schedule.factor(step as u64);
            let want = want.as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-12,
                "{kind:?} warmup {warmup} total {total}: step {step}: {got} vs {want}"
            );
        }
    }
    // warmup_ratio rounds up, as transformers' TrainingArguments.get_warmup_steps does.
    assert_eq!(
        Schedule::new(ScheduleKind::Linear, None, 0.1, 95, 0.5).warmup_steps,
        10
    );
}
