//! Activation checkpointing for the Llama decoder layers: each layer's forward keeps only its
//! input, and the backward pass recomputes the layer (same RNG state, same autocast) before
//! back-propagating through it, as `torch.utils.checkpoint` does. Memory for activations drops
//! from every intermediate of every layer to one hidden state per layer, for one extra forward.
//!
//! tch has no custom autograd functions, so the node lives in a C++ shim (`csrc/checkpoint.cpp`)
//! that calls back into Rust to run the layer.

use crate::llama::Llama;
use crate::{ModelError, Result};
use std::ffi::{c_char, c_void, CStr};
use std::mem::ManuallyDrop;
use tch::Tensor;
use torch_sys::C_tensor;

type LayerFn = unsafe extern "C" fn(
    *const c_void,
    i64,
    *mut C_tensor,
    *mut C_tensor,
    *mut C_tensor,
    *mut C_tensor,
) -> *mut C_tensor;

extern "C" {
    fn ragtune_checkpoint_layer(
        x: *mut C_tensor,
        cos: *mut C_tensor,
        sin: *mut C_tensor,
        mask: *mut C_tensor,
        model: *const c_void,
        layer: i64,
        callback: LayerFn,
        error: *mut c_char,
    ) -> *mut C_tensor;
    fn ragtune_grad_enabled() -> bool;
}

/// Whether autograd records operations now (false under `tch::no_grad`).
pub fn grad_enabled() -> bool {
    // SAFETY: reads a thread-local flag.
    unsafe { ragtune_grad_enabled() }
}

/// Runs layer `layer` of `model` under a checkpoint node. `model` must outlive the backward pass
/// through the result (the node calls back into it), which holds for a model that trains.
pub(crate) fn checkpointed_layer(
    model: &Llama,
    layer: usize,
    x: &Tensor,
    rope: &(Tensor, Tensor),
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let undefined = Tensor::new();
    let mask = mask.unwrap_or(&undefined);
    let mut error = [0 as c_char; 512];
    // SAFETY: the tensors are borrowed for the call (the shim copies the handles it keeps); the
    // callback gets `model` back only while the graph through the result is alive.
    let out = unsafe {
        ragtune_checkpoint_layer(
            x.as_ptr() as *mut C_tensor,
            rope.0.as_ptr() as *mut C_tensor,
            rope.1.as_ptr() as *mut C_tensor,
            mask.as_ptr() as *mut C_tensor,
            model as *const Llama as *const c_void,
            layer as i64,
            run_layer,
            error.as_mut_ptr(),
        )
    };
    if out.is_null() {
        // SAFETY: the shim wrote a NUL-terminated message into the 512 bytes.
        let message = unsafe { CStr::from_ptr(error.as_ptr()) }.to_string_lossy();
        return Err(ModelError::Invalid(format!(
            "checkpointed decoder layer {layer}: {message}"
        )));
    }
    // SAFETY: the shim returns a tensor allocated for us to own.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// The callback: borrowed tensors in, a newly owned tensor out (null after a panic, which must
/// not unwind into C++).
unsafe extern "C" fn run_layer(
    model: *const c_void,
    layer: i64,
    x: *mut C_tensor,
    cos: *mut C_tensor,
    sin: *mut C_tensor,
    mask: *mut C_tensor,
) -> *mut C_tensor {
    let result = std::panic::catch_unwind(|| {
        // SAFETY: see `checkpointed_layer`; ManuallyDrop because the C++ side owns the handles.
        let model = unsafe { &*(model as *const Llama) };
        let borrow = |p: *mut C_tensor| ManuallyDrop::new(unsafe { Tensor::from_ptr(p) });
        let (x, cos, sin, mask) = (borrow(x), borrow(cos), borrow(sin), borrow(mask));
        let rope = (cos.shallow_clone(), sin.shallow_clone());
        let mask: &Tensor = &mask;
        let mask = mask.defined().then_some(mask);
        model.layer_forward(layer as usize, &x, &rope, mask)
    });
    match result {
        Ok(t) => {
            let mut t = ManuallyDrop::new(t);
            t.as_mut_ptr()
        }
        Err(_) => std::ptr::null_mut(),
    }
}
