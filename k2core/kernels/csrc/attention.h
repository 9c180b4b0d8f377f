// Plain-C description of one fused attention + max-logit problem (CPU), shared by the kernel and its torch binding.
#pragma once

#include <stdint.h>

#include "max_logit.h"

#ifdef __cplusplus
extern "C" {
#endif

// Causal attention of q [B, H, T, D] over k [B, H or 1, T, D] and v [B, H or 1, T, Dv], all fp32 or all bf16 (last
// dimension contiguous). Pair (b, h, i, j) is allowed when j <= i and (key_mask == NULL or key_mask[b * mask_sb +
// j * mask_st] != 0); its logit is scale * q[b, h, i] . k[b, h, j].
typedef struct {
  k2_operand q, k, v;
  int dtype;  // K2_F32 or K2_BF16
  const uint8_t* key_mask;
  int64_t mask_sb, mask_st;
  int64_t batch, heads, seq;
  float scale;
} k2_attention_args;

// Writes softmax-weighted values to out [B, H, T, Dv] (fp32, contiguous; zero for a query with no allowed key) and
// the max over b and allowed (i, j) of the logit to max_logit[h] (-inf where no pair is allowed, NaN if a logit is
// NaN), in one pass. Runs on up to `threads` OpenMP threads.
void k2_attention_cpu(const k2_attention_args* args, float* out, float* max_logit, int threads);

#ifdef __cplusplus
}
#endif
