// Dropout for CPU tensors as one fused, multithreaded pass. torch's CPU dropout draws its mask with
// a single-threaded Bernoulli kernel (the MKL path is taken on Intel CPUs only), then divides and
// multiplies in further passes, and keeps a mask as wide as the input for backward: on BERT's
// attention probabilities that is most of the cost of attention in training.
//
// Here each element's keep/drop bit comes from a counter-based hash (SplitMix64's finalizer) of
// the element's index and one seed drawn from torch's default CPU generator, so the mask depends
// only on the generator's state, not on the thread count: seeding torch (or restoring its state,
// as gradient caching and activation checkpointing do) reproduces it. The mask is kept as bytes.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstdio>
#include <mutex>

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ULL;
constexpr int64_t kGrain = 16384;

inline uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

uint64_t draw_seed() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return at::check_generator<at::CPUGeneratorImpl>(gen)->random64();
}

// Writes mask[i] = 1 where element i is kept (probability `keep`) and out[i] = x[i] * scale there,
// 0 elsewhere. Elements are decided two per 64-bit hash, so ranges start at even indices.
template <typename T>
void dropout_forward(const T *x, T *out, uint8_t *mask, int64_t n, double keep, uint64_t seed) {
  const uint32_t threshold = keep >= 1.0 ? UINT32_MAX : static_cast<uint32_t>(keep * 4294967296.0);
  const float scale = static_cast<float>(1.0 / keep);
  const int64_t words = (n + 1) / 2;
  at::parallel_for(0, words, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      const uint64_t bits = mix(seed + static_cast<uint64_t>(w + 1) * kGamma);
      const int64_t i = 2 * w;
      const uint8_t lo = static_cast<uint32_t>(bits) < threshold;
      mask[i] = lo;
      out[i] = lo ? static_cast<T>(static_cast<float>(x[i]) * scale) : static_cast<T>(0);
      if (i + 1 < n) {
        const uint8_t hi = static_cast<uint32_t>(bits >> 32) < threshold;
        mask[i + 1] = hi;
        out[i + 1] = hi ? static_cast<T>(static_cast<float>(x[i + 1]) * scale) : static_cast<T>(0);
      }
    }
  });
}

template <typename T>
void dropout_backward(const T *grad, T *out, const uint8_t *mask, int64_t n, float scale) {
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      out[i] = mask[i] ? static_cast<T>(static_cast<float>(grad[i]) * scale) : static_cast<T>(0);
    }
  });
}

struct FusedDropout : public torch::autograd::Function<FusedDropout> {
  static Tensor forward(AutogradContext *ctx, Tensor x, double p) {
    Tensor input = x.contiguous();
    Tensor out = torch::empty_like(input);
    Tensor mask = torch::empty(input.sizes(), input.options().dtype(torch::kUInt8));
    const double keep = 1.0 - p;
    const uint64_t seed = draw_seed();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "fused_dropout",
                                    [&] {
                                      dropout_forward<scalar_t>(
                                          input.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                          mask.data_ptr<uint8_t>(), input.numel(), keep, seed);
                                    });
    ctx->save_for_backward({mask});
    ctx->saved_data["scale"] = 1.0 / keep;
    return out;
  }

  static variable_list backward(AutogradContext *ctx, variable_list grad_outputs) {
    Tensor mask = ctx->get_saved_variables()[0];
    const float scale = static_cast<float>(ctx->saved_data["scale"].toDouble());
    Tensor grad = grad_outputs[0].contiguous();
    Tensor out = torch::empty_like(grad);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad.scalar_type(),
                                    "fused_dropout_backward", [&] {
                                      dropout_backward<scalar_t>(
                                          grad.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                          mask.data_ptr<uint8_t>(), grad.numel(), scale);
                                    });
    return {out, Tensor()};
  }
};

}  // namespace

extern "C" {

// `x` with each element zeroed with probability `p` (0 <= p < 1) and the others scaled by
// 1 / (1 - p), differentiable; `x` must be a CPU floating-point tensor. Null (and a message in
// `error`, which must hold 512 bytes) on failure. `x` is borrowed.
Tensor *ragtune_fused_dropout(Tensor *x, double p, char *error) {
  try {
    return new Tensor(FusedDropout::apply(*x, p));
  } catch (const std::exception &e) {
    std::snprintf(error, 512, "%s", e.what());
    return nullptr;
  }
}
}
