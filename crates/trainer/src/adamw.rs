//! AdamW over tch tensors, with its state (both moments and the step count of every parameter)
//! in plain tensors, so that a checkpoint can hold it and a resumed run continues exactly.
//!
//! Follows `torch.optim.AdamW` (single-tensor path, `amsgrad=False`, `maximize=False`) operation
//! by operation, so that the same gradients give the same parameters:
//! decoupled weight decay `p *= 1 - lr·wd`, `m = lerp(m, g, 1 - β1)`, `v = β2·v + (1 - β2)·g²`,
//! `p -= lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)`.
//! With `fused` on, the same update runs in torch's fused kernel (`AdamW(fused=True)`), one pass
//! per parameter; it agrees with the single-tensor path to rounding.

use crate::params::TrainableParam;
use crate::{Result, TrainerError};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, CStr};
use std::path::Path;
use tch::Tensor;
use torch_sys::C_tensor;

extern "C" {
    fn ragtune_fused_adamw(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        steps: *const *mut C_tensor,
        n: i64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        error: *mut c_char,
        error_len: usize,
    ) -> i32;
}

#[derive(Debug)]
struct ParamState {
    param: TrainableParam,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Steps taken by this parameter (a parameter without a gradient in a step does not count it, as in torch).
    step: u64,
}

#[derive(Debug)]
pub struct AdamW {
    states: Vec<ParamState>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    fused: bool,
}

impl AdamW {
    /// Zero moments for each parameter (fp32 like the master weights), kept on the parameter's device.
    pub fn new(params: Vec<TrainableParam>, betas: (f64, f64), eps: f64) -> Self {
        let states = params
            .into_iter()
            .map(|param| {
                let exp_avg = param.tensor.zeros_like().detach();
                let exp_avg_sq = param.tensor.zeros_like().detach();
                ParamState {
                    param,
                    exp_avg,
                    exp_avg_sq,
                    step: 0,
                }
            })
            .collect();
        AdamW {
            states,
            beta1: betas.0,
            beta2: betas.1,
            eps,
            fused: false,
        }
    }

    /// Runs updates through torch's fused kernel (see the module docs).
    pub fn with_fused(mut self, fused: bool) -> Self {
        self.fused = fused;
        self
    }

    pub fn params(&self) -> impl Iterator<Item = &TrainableParam> {
        self.states.iter().map(|s| &s.param)
    }

    /// The gradients of the parameters that have one, in parameter order.
    pub fn grads(&self) -> Vec<Tensor> {
        self.states
            .iter()
            .map(|s| s.param.tensor.grad())
            .filter(|g| g.defined())
            .collect()
    }

    /// One update at base learning rate `lr` (each parameter uses `lr * lr_scale`).
    pub fn step(&mut self, lr: f64) -> Result<()> {
        if self.fused {
            self.step_fused(lr)
        } else {
            self.step_single_tensor(lr);
            Ok(())
        }
    }

    fn step_single_tensor(&mut self, lr: f64) {
        let (beta1, beta2, eps) = (self.beta1, self.beta2, self.eps);
        tch::no_grad(|| {
            for state in &mut self.states {
                let grad = state.param.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                state.step += 1;
                let lr = lr * state.param.lr_scale;
                let param = &mut state.param.tensor;
                let weight_decay = state.param.weight_decay;
                if weight_decay != 0.0 {
                    let _ = param.g_mul_scalar_(1.0 - lr * weight_decay);
                }
                let _ = state.exp_avg.lerp_(&grad, 1.0 - beta1);
                // addcmul_(g, g, value) computes v + (value·g)·g; the same roundings as torch's kernel.
                let _ = state.exp_avg_sq.g_mul_scalar_(beta2);
                let _ = state.exp_avg_sq.g_add_(&(&grad * (1.0 - beta2) * &grad));
                // torch keeps the step as a float and raises the betas with Python's `**` (C pow).
                let step = state.step as f64;
                let bias_correction1 = 1.0 - beta1.powf(step);
                let bias_correction2 = 1.0 - beta2.powf(step);
                let step_size = lr / bias_correction1;
                let bias_correction2_sqrt = bias_correction2.powf(0.5);
                let denom = (state.exp_avg_sq.sqrt() / bias_correction2_sqrt) + eps;
                // addcdiv_(m, denom, value=-step_size) computes p + (value·m) / denom.
                let _ = param.g_add_(&((&state.exp_avg * -step_size) / &denom));
            }
        });
    }

    /// The kernel takes one learning rate, weight decay, device and dtype per call, so
    /// parameters are updated in groups of equal settings.
    fn step_fused(&mut self, lr: f64) -> Result<()> {
        let mut groups: BTreeMap<(u64, u64, String), Vec<usize>> = BTreeMap::new();
        let mut grads = Vec::with_capacity(self.states.len());
        for (i, state) in self.states.iter().enumerate() {
            let grad = state.param.tensor.grad();
            if grad.defined() {
                let tensor = &state.param.tensor;
                let key = (
                    (lr * state.param.lr_scale).to_bits(),
                    state.param.weight_decay.to_bits(),
                    format!("{:?} {:?}", tensor.device(), tensor.kind()),
                );
                groups.entry(key).or_default().push(i);
            }
            grads.push(grad);
        }
        for ((group_lr, weight_decay, _), members) in groups {
            let steps: Vec<Tensor> = members
                .iter()
                .map(|&i| {
                    self.states[i].step += 1;
                    Tensor::from(self.states[i].step as f32)
                        .to_device(self.states[i].param.tensor.device())
                })
                .collect();
            let pointers = |f: &dyn Fn(usize) -> *mut C_tensor| -> Vec<*mut C_tensor> {
                members.iter().map(|&i| f(i)).collect()
            };
            let params = pointers(&|i| self.states[i].param.tensor.as_ptr() as *mut C_tensor);
            let grad_ptrs = pointers(&|i| grads[i].as_ptr() as *mut C_tensor);
            let exp_avgs = pointers(&|i| self.states[i].exp_avg.as_ptr() as *mut C_tensor);
            let exp_avg_sqs = pointers(&|i| self.states[i].exp_avg_sq.as_ptr() as *mut C_tensor);
            let step_ptrs: Vec<*mut C_tensor> =
                steps.iter().map(|s| s.as_ptr() as *mut C_tensor).collect();
            let mut error = [0 as c_char; 512];
            // SAFETY: every pointer is a live tensor owned by `self`, `grads` or `steps` for the
            // whole call, and the shim only borrows them.
            let status = unsafe {
                ragtune_fused_adamw(
                    params.as_ptr(),
                    grad_ptrs.as_ptr(),
                    exp_avgs.as_ptr(),
                    exp_avg_sqs.as_ptr(),
                    step_ptrs.as_ptr(),
                    members.len() as i64,
                    f64::from_bits(group_lr),
                    self.beta1,
                    self.beta2,
                    f64::from_bits(weight_decay),
                    self.eps,
                    error.as_mut_ptr(),
                    error.len(),
                )
            };
            if status != 0 {
                // SAFETY: the shim wrote a NUL-terminated message into `error`.
                let message = unsafe { CStr::from_ptr(error.as_ptr()) }.to_string_lossy();
                return Err(TrainerError::Torch(tch::TchError::Torch(format!(
                    "fused AdamW failed: {message} (set `[trainer.optimizer] fused = false` to use \
                     the single-tensor path)"
                ))));
            }
        }
        Ok(())
    }

    /// Zeroes every gradient in place (`zero_grad(set_to_none=False)`).
    pub fn zero_grad(&mut self) {
        for state in &mut self.states {
            state.param.tensor.zero_grad();
        }
    }

    /// Both moments of every parameter, named `exp_avg.<param>` and `exp_avg_sq.<param>`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.states.len());
        for s in &self.states {
            out.push((
                format!("exp_avg.{}", s.param.name),
                s.exp_avg.shallow_clone(),
            ));
            out.push((
                format!("exp_avg_sq.{}", s.param.name),
                s.exp_avg_sq.shallow_clone(),
            ));
        }
        out
    }

    /// The step count of every parameter.
    pub fn steps(&self) -> BTreeMap<String, u64> {
        self.states
            .iter()
            .map(|s| (s.param.name.clone(), s.step))
            .collect()
    }

    /// Restores what `state_tensors` and `steps` gave; `origin` names the file in errors.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        steps: &BTreeMap<String, u64>,
        origin: &Path,
    ) -> Result<()> {
        for s in &mut self.states {
            for (prefix, target) in [
                ("exp_avg", &mut s.exp_avg),
                ("exp_avg_sq", &mut s.exp_avg_sq),
            ] {
                let key = format!("{prefix}.{}", s.param.name);
                let saved = tensors.get(&key).ok_or_else(|| {
                    TrainerError::format(origin, format!("optimizer state `{key}` is missing (was the model or its frozen set changed?)"))
                })?;
                if saved.size() != target.size() {
                    return Err(TrainerError::format(
                        origin,
                        format!(
                            "optimizer state `{key}` has shape {:?}, the parameter {:?}",
                            saved.size(),
                            target.size()
                        ),
                    ));
                }
                tch::no_grad(|| target.copy_(saved));
            }
            s.step = *steps.get(&s.param.name).ok_or_else(|| {
                TrainerError::format(
                    origin,
                    format!("no optimizer step count for `{}`", s.param.name),
                )
            })?;
        }
        let expected = 2 * self.states.len();
        if tensors.len() != expected {
            return Err(TrainerError::format(
                origin,
                format!("optimizer state holds {} tensors, this model's trainable parameters need {expected}", tensors.len()),
            ));
        }
        Ok(())
    }
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does (coefficient `max_norm / (norm + 1e-6)`, clamped at 1).
/// Returns the norm before clipping.
pub fn clip_grad_norm(grads: &[Tensor], max_norm: f64) -> f64 {
    let total = grad_norm_tensor(grads);
    let Some(total) = total else { return 0.0 };
    tch::no_grad(|| {
        // Python's `max_norm / t` is `t.reciprocal() * max_norm`.
        let coef = ((&total + 1e-6).reciprocal() * max_norm).clamp_max(1.0);
        for g in grads {
            let mut g = g.shallow_clone();
            let _ = g.g_mul_(&coef.to_device(g.device()));
        }
    });
    total.double_value(&[])
}

/// The global L2 norm of `grads` (0 for none).
pub fn grad_norm(grads: &[Tensor]) -> f64 {
    grad_norm_tensor(grads).map_or(0.0, |t| t.double_value(&[]))
}

fn grad_norm_tensor(grads: &[Tensor]) -> Option<Tensor> {
    let first = grads.first()?;
    let device = first.device();
    tch::no_grad(|| {
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm().to_device(device)).collect();
        Some(Tensor::stack(&norms, 0).norm())
    })
}
