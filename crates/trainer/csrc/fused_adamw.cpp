// torch's fused AdamW kernel (`torch.optim.AdamW(fused=True)`), which tch 0.24 does not expose:
// one vectorized pass over each parameter instead of the ten element-wise passes of the
// single-tensor path, which on a 2-core CPU is a sixth of a BERT training step.
#include <ATen/ATen.h>
#include <ATen/ops/_fused_adamw.h>

#include <cstring>
#include <exception>
#include <vector>

extern "C" {

// Updates `n` parameters in place, all with the same lr and weight decay. `steps` are
// float32 scalars already counting this step. Returns 0, or 1 with a message in `error`.
int ragtune_fused_adamw(at::Tensor **params, at::Tensor **grads, at::Tensor **exp_avgs,
                        at::Tensor **exp_avg_sqs, at::Tensor **steps, int64_t n, double lr,
                        double beta1, double beta2, double weight_decay, double eps,
                        char *error, size_t error_len) {
  try {
    std::vector<at::Tensor> p, g, m, v, s;
    for (int64_t i = 0; i < n; i++) {
      p.push_back(*params[i]);
      g.push_back(*grads[i]);
      m.push_back(*exp_avgs[i]);
      v.push_back(*exp_avg_sqs[i]);
      s.push_back(*steps[i]);
    }
    at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false);
    return 0;
  } catch (const std::exception &e) {
    if (error_len > 0) {
      std::strncpy(error, e.what(), error_len - 1);
      error[error_len - 1] = '\0';
    }
    return 1;
  }
}

}
