// Turns checked torch tensors into the plain k2_max_logit_args both bindings pass to their kernel.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "max_logit.h"

namespace k2 {

inline k2_operand operand(const at::Tensor& t, int64_t batch, int64_t seq) {
  TORCH_CHECK(t.dim() == 4, "max_logit: expected a [B, H, T, D] tensor, got ", t.dim(), " dims");
  TORCH_CHECK(t.size(0) == batch && t.size(2) == seq, "max_logit: batch and length must match across inputs");
  TORCH_CHECK(t.size(3) <= 1 || t.stride(3) == 1, "max_logit: the last dimension must be contiguous");
  return {t.data_ptr(), t.stride(0), t.size(1) == 1 ? 0 : t.stride(1), t.stride(2), t.size(3)};
}

// Points args.key_mask (and its strides) at an optional bool [B, T] mask after checking it.
template <typename Args>
void attach_key_mask(Args& a, const std::optional<at::Tensor>& key_mask, const at::Tensor& out) {
  if (!key_mask.has_value()) return;
  const at::Tensor& m = *key_mask;
  TORCH_CHECK(m.scalar_type() == at::kBool && m.dim() == 2 && m.size(0) == a.batch && m.size(1) == a.seq,
              "k2_kernels: key_mask must be a bool [B, T] tensor");
  TORCH_CHECK(m.device() == out.device(), "k2_kernels: all inputs must be on one device");
  a.key_mask = static_cast<const uint8_t*>(m.data_ptr());
  a.mask_sb = m.stride(0);
  a.mask_st = m.stride(1);
}

inline k2_max_logit_args make_args(const at::Tensor& q1, const at::Tensor& k1, const std::optional<at::Tensor>& q2,
                                   const std::optional<at::Tensor>& k2, const std::optional<at::Tensor>& key_mask,
                                   double scale, const at::Tensor& out) {
  const auto dtype = q1.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "max_logit: the kernels take float32 or bfloat16");
  TORCH_CHECK(q2.has_value() == k2.has_value(), "max_logit: give both second pieces or neither");
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous() && out.numel() == q1.size(1),
              "max_logit: out must be a contiguous float32 [H] tensor");
  k2_max_logit_args a{};
  a.batch = q1.size(0);
  a.heads = q1.size(1);
  a.seq = q1.size(2);
  a.dtype = dtype == at::kFloat ? K2_F32 : K2_BF16;
  a.scale = static_cast<float>(scale);
  a.pieces = q2.has_value() ? 2 : 1;
  const at::Tensor* qs[2] = {&q1, q2.has_value() ? &*q2 : nullptr};
  const at::Tensor* ks[2] = {&k1, k2.has_value() ? &*k2 : nullptr};
  for (int p = 0; p < a.pieces; ++p) {
    for (const at::Tensor* t : {qs[p], ks[p]}) {
      TORCH_CHECK(t->scalar_type() == dtype, "max_logit: all pieces must share one dtype");
      TORCH_CHECK(t->device() == out.device(), "max_logit: all inputs must be on one device");
    }
    TORCH_CHECK(qs[p]->size(1) == a.heads, "max_logit: every query piece needs all H heads");
    TORCH_CHECK(ks[p]->size(1) == a.heads || ks[p]->size(1) == 1, "max_logit: keys need H heads or 1 shared head");
    TORCH_CHECK(qs[p]->size(3) == ks[p]->size(3), "max_logit: query and key pieces differ in width");
    a.q[p] = operand(*qs[p], a.batch, a.seq);
    a.k[p] = operand(*ks[p], a.batch, a.seq);
  }
  attach_key_mask(a, key_mask, out);
  return a;
}

}  // namespace k2
