// Activation checkpointing for ragtune-models: a torch::autograd::Function whose forward runs a
// decoder layer (a Rust callback) without recording a graph and keeps only its input, and whose
// backward recomputes the layer with the graph on and back-propagates through it, as
// torch.utils.checkpoint (reentrant) does. tch 0.24 exposes no custom autograd functions.
//
// The RNG state (dropout in adapters) and the CPU autocast state of the forward pass are
// restored for the recomputation, so it reproduces the forward exactly.
#include <ATen/autocast_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <stdexcept>

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

extern "C" {
// Runs layer `layer` of the model at `model` on `x` with RoPE `cos`/`sin` and additive `mask`
// (undefined: causal). Takes ownership of none of its arguments (they are borrowed copies) and
// returns a newly allocated tensor, or null after a Rust panic.
typedef Tensor *(*ragtune_layer_fn)(const void *model, int64_t layer, Tensor *x, Tensor *cos,
                                    Tensor *sin, Tensor *mask);
}

namespace {

Tensor call_layer(int64_t callback, int64_t model, int64_t layer, const Tensor &x,
                  const Tensor &cos, const Tensor &sin, const Tensor &mask) {
  auto fn = reinterpret_cast<ragtune_layer_fn>(callback);
  Tensor xs = x, c = cos, s = sin, m = mask;
  Tensor *out = fn(reinterpret_cast<const void *>(model), layer, &xs, &c, &s, &m);
  if (out == nullptr) {
    throw std::runtime_error("ragtune checkpoint: the decoder layer failed (see the panic above)");
  }
  Tensor result = *out;
  delete out;
  return result;
}

struct LayerCheckpoint : public torch::autograd::Function<LayerCheckpoint> {
  static Tensor forward(AutogradContext *ctx, Tensor x, Tensor cos, Tensor sin, Tensor mask,
                        int64_t model, int64_t layer, int64_t callback) {
    ctx->saved_data["model"] = model;
    ctx->saved_data["layer"] = layer;
    ctx->saved_data["callback"] = callback;
    ctx->saved_data["rng"] = at::detail::getDefaultCPUGenerator().get_state();
    bool autocast = at::autocast::is_autocast_enabled(c10::DeviceType::CPU);
    ctx->saved_data["autocast"] = autocast;
    ctx->saved_data["autocast_dtype"] =
        static_cast<int64_t>(at::autocast::get_autocast_dtype(c10::DeviceType::CPU));
    ctx->save_for_backward({x, cos, sin, mask});
    torch::NoGradGuard no_grad;
    return call_layer(callback, model, layer, x, cos, sin, mask);
  }

  static variable_list backward(AutogradContext *ctx, variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    auto model = ctx->saved_data["model"].toInt();
    auto layer = ctx->saved_data["layer"].toInt();
    auto callback = ctx->saved_data["callback"].toInt();
    Tensor x = saved[0].detach().requires_grad_(true);
    Tensor output;
    {
      auto generator = at::detail::getDefaultCPUGenerator();
      auto rng_now = generator.get_state();
      generator.set_state(ctx->saved_data["rng"].toTensor());
      bool autocast_now = at::autocast::is_autocast_enabled(c10::DeviceType::CPU);
      auto dtype_now = at::autocast::get_autocast_dtype(c10::DeviceType::CPU);
      at::autocast::set_autocast_enabled(c10::DeviceType::CPU,
                                         ctx->saved_data["autocast"].toBool());
      at::autocast::set_autocast_dtype(
          c10::DeviceType::CPU,
          static_cast<at::ScalarType>(ctx->saved_data["autocast_dtype"].toInt()));
      try {
        torch::AutoGradMode grad(true);
        output = call_layer(callback, model, layer, x, saved[1], saved[2], saved[3]);
        at::autocast::clear_cache();
      } catch (...) {
        at::autocast::set_autocast_enabled(c10::DeviceType::CPU, autocast_now);
        at::autocast::set_autocast_dtype(c10::DeviceType::CPU, dtype_now);
        generator.set_state(rng_now);
        throw;
      }
      at::autocast::set_autocast_enabled(c10::DeviceType::CPU, autocast_now);
      at::autocast::set_autocast_dtype(c10::DeviceType::CPU, dtype_now);
      generator.set_state(rng_now);
    }
    // Accumulates into the parameters' .grad (LoRA weights, ...) and into x.grad.
    torch::autograd::backward({output}, {grad_outputs[0]});
    return {x.grad(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

extern "C" {

// The layer's output under a LayerCheckpoint node; null (and a message in `error`, which must hold
// 512 bytes) on failure. Arguments are borrowed.
Tensor *ragtune_checkpoint_layer(Tensor *x, Tensor *cos, Tensor *sin, Tensor *mask,
                                 const void *model, int64_t layer, ragtune_layer_fn callback,
                                 char *error) {
  try {
    Tensor out = LayerCheckpoint::apply(*x, *cos, *sin, *mask, reinterpret_cast<int64_t>(model),
                                        layer, reinterpret_cast<int64_t>(callback));
    return new Tensor(out);
  } catch (const std::exception &e) {
    std::snprintf(error, 512, "%s", e.what());
    return nullptr;
  }
}
}

extern "C" {
bool ragtune_grad_enabled() { return at::GradMode::is_enabled(); }
}
