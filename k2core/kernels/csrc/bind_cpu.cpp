// torch binding of the CPU kernels: registers torch.ops.k2_kernels.max_logit_cpu (fills a preallocated [H] output)
// and torch.ops.k2_kernels.attention_cpu (fills a preallocated attention output and an [H] max-logit tensor).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "attention.h"
#include "bind_common.h"

namespace {

void max_logit_cpu(const at::Tensor& q1, const at::Tensor& k1, const std::optional<at::Tensor>& q2,
                   const std::optional<at::Tensor>& k2, const std::optional<at::Tensor>& key_mask, double scale,
                   at::Tensor& out) {
  TORCH_CHECK(out.device().is_cpu(), "max_logit_cpu: inputs must be CPU tensors");
  const k2_max_logit_args args = k2::make_args(q1, k1, q2, k2, key_mask, scale, out);
  k2_max_logit_cpu(&args, out.data_ptr<float>(), at::get_num_threads());
}

void attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const std::optional<at::Tensor>& key_mask, double scale, at::Tensor& out, at::Tensor& max_logit) {
  TORCH_CHECK(q.device().is_cpu(), "attention_cpu: inputs must be CPU tensors");
  const auto dtype = q.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "attention_cpu: the kernel takes float32 or bfloat16");
  TORCH_CHECK(q.dim() == 4, "attention_cpu: q must be [B, H, T, D]");
  const int64_t batch = q.size(0), heads = q.size(1), seq = q.size(2);
  for (const at::Tensor* t : {&k, &v}) {
    TORCH_CHECK(t->scalar_type() == dtype && t->device() == q.device(), "attention_cpu: q, k, v share dtype, device");
    TORCH_CHECK(t->dim() == 4 && (t->size(1) == heads || t->size(1) == 1), "attention_cpu: k, v need H or 1 heads");
  }
  TORCH_CHECK(k.size(1) == v.size(1), "attention_cpu: k and v must have the same number of heads");
  TORCH_CHECK(k.size(3) == q.size(3), "attention_cpu: q and k widths differ");
  const int64_t dv = v.size(3);
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous() &&
                  out.sizes() == at::IntArrayRef({batch, heads, seq, dv}),
              "attention_cpu: out must be a contiguous float32 [B, H, T, Dv] tensor");
  TORCH_CHECK(max_logit.scalar_type() == at::kFloat && max_logit.is_contiguous() && max_logit.numel() == heads,
              "attention_cpu: max_logit must be a contiguous float32 [H] tensor");
  k2_attention_args a{};
  a.batch = batch;
  a.heads = heads;
  a.seq = seq;
  a.dtype = dtype == at::kFloat ? K2_F32 : K2_BF16;
  a.scale = static_cast<float>(scale);
  a.q = k2::operand(q, batch, seq);
  a.k = k2::operand(k, batch, seq);
  a.v = k2::operand(v, batch, seq);
  k2::attach_key_mask(a, key_mask, out);
  k2_attention_cpu(&a, out.data_ptr<float>(), max_logit.data_ptr<float>(), at::get_num_threads());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(k2_kernels, m) {
  m.def("max_logit_cpu(Tensor q1, Tensor k1, Tensor? q2, Tensor? k2, Tensor? key_mask, float scale, Tensor(a!) out)"
        " -> ()");
  m.impl("max_logit_cpu", &max_logit_cpu);
  m.def("attention_cpu(Tensor q, Tensor k, Tensor v, Tensor? key_mask, float scale, Tensor(a!) out, "
        "Tensor(b!) max_logit) -> ()");
  m.impl("attention_cpu", &attention_cpu);
}
