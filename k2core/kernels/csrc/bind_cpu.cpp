// torch binding of the CPU kernel: registers torch.ops.k2_kernels.max_logit_cpu (fills a preallocated [H] output).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "bind_common.h"

namespace {

void max_logit_cpu(const at::Tensor& q1, const at::Tensor& k1, const std::optional<at::Tensor>& q2,
                   const std::optional<at::Tensor>& k2, const std::optional<at::Tensor>& key_mask, double scale,
                   at::Tensor& out) {
  TORCH_CHECK(out.device().is_cpu(), "max_logit_cpu: inputs must be CPU tensors");
  const k2_max_logit_args args = k2::make_args(q1, k1, q2, k2, key_mask, scale, out);
  k2_max_logit_cpu(&args, out.data_ptr<float>(), at::get_num_threads());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(k2_kernels, m) {
  m.def("max_logit_cpu(Tensor q1, Tensor k1, Tensor? q2, Tensor? k2, Tensor? key_mask, float scale, Tensor(a!) out)"
        " -> ()");
  m.impl("max_logit_cpu", &max_logit_cpu);
}
