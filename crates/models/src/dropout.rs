//! Dropout that is cheap on the CPU. torch's CPU dropout draws its mask with a single-threaded
//! Bernoulli kernel (MKL's is used on Intel CPUs only) and makes two more passes over the input;
//! on BERT's attention probabilities that was most of attention's cost in training. The shim
//! (`csrc/dropout.cpp`) does it in one multithreaded pass with a counter-based hash seeded from
//! torch's CPU generator, so `tch::manual_seed` and restored generator states reproduce it, and it
//! keeps a one-byte mask for backward. Other devices use torch's own (fused) dropout.

use std::ffi::{c_char, CStr};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn ragtune_fused_dropout(x: *mut C_tensor, p: f64, error: *mut c_char) -> *mut C_tensor;
}

/// `xs` with each element zeroed with probability `p` and the rest scaled by `1 / (1 - p)` when
/// `train` is true; `xs` itself otherwise.
pub fn dropout(xs: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return xs.shallow_clone();
    }
    let floating = matches!(
        xs.kind(),
        Kind::Float | Kind::Double | Kind::BFloat16 | Kind::Half
    );
    if xs.device() != Device::Cpu || !floating || p >= 1.0 {
        return xs.dropout(p, true);
    }
    let mut error = [0 as c_char; 512];
    // SAFETY: `xs` is borrowed for the call; the shim returns a tensor for us to own, or null with
    // a NUL-terminated message in `error`.
    let out = unsafe { ragtune_fused_dropout(xs.as_ptr() as *mut C_tensor, p, error.as_mut_ptr()) };
    if out.is_null() {
        let message = unsafe { CStr::from_ptr(error.as_ptr()) }.to_string_lossy();
        panic!(
            "dropout on a {:?} tensor {:?}: {message}",
            xs.kind(),
            xs.size()
        );
    }
    // SAFETY: see above.
    unsafe { Tensor::from_ptr(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_expected_fraction_scaled_and_reproduces_under_a_seed() {
        let xs = Tensor::ones([1000, 999], (Kind::Float, Device::Cpu));
        tch::manual_seed(7);
        let a = dropout(&xs, 0.1, true);
        tch::manual_seed(7);
        let b = dropout(&xs, 0.1, true);
        let c = dropout(&xs, 0.1, true);
        assert!(a.equal(&b), "same seed, same mask");
        assert!(!a.equal(&c), "the generator advances between calls");
        let kept = a
            .ne(0.0)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]);
        assert!((kept - 0.9).abs() < 0.002, "kept fraction {kept}");
        let values = a.masked_select(&a.ne(0.0));
        let scale = 1.0 / 0.9;
        assert!(values.allclose(&(values.ones_like() * scale), 1e-6, 1e-6, false));
        // Neighbouring elements (the two halves of one hash) are not correlated.
        let flat = a.ne(0.0).to_kind(Kind::Double).reshape([-1, 2]);
        let both = (flat.select(1, 0) * flat.select(1, 1))
            .mean(Kind::Double)
            .double_value(&[]);
        assert!((both - 0.81).abs() < 0.003, "P(both kept) {both}");
    }

    #[test]
    fn gradient_is_the_mask_times_the_scale() {
        let xs = Tensor::randn([37, 41], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let out = dropout(&xs, 0.25, true);
        let upstream = Tensor::randn([37, 41], (Kind::Float, Device::Cpu));
        (&out * &upstream).sum(Kind::Float).backward();
        let kept = out.ne(0.0).to_kind(Kind::Float);
        let expected = &upstream * &kept / 0.75;
        assert!(xs.grad().allclose(&expected, 1e-6, 1e-6, false));
        assert!(out.allclose(&(&xs * &kept / 0.75), 1e-6, 1e-6, false));
    }

    #[test]
    fn bf16_and_eval_mode() {
        let xs = Tensor::ones([64, 3], (Kind::BFloat16, Device::Cpu));
        let out = dropout(&xs, 0.5, true);
        assert_eq!(out.kind(), Kind::BFloat16);
        assert!(dropout(&xs, 0.5, false).equal(&xs));
    }
}
