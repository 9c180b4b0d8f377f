// Plain-C description of one max-logit problem, shared by the CPU kernel, the CUDA kernel and the torch bindings.
// Kept free of torch headers so the kernels compile (and are compile-checked) on their own.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { K2_F32 = 0, K2_BF16 = 1 };

// A [B, H, T, dim] tensor whose last dimension is contiguous; sh = 0 broadcasts one head to all heads.
typedef struct {
  const void* data;
  int64_t sb, sh, st;
  int64_t dim;
} k2_operand;

// The logit of (b, h, i, j) is scale * sum_p q[p][b, h, i, :] . k[p][b, h, j, :]; only pairs j <= i whose key is
// allowed (key_mask == NULL or key_mask[b * mask_sb + j * mask_st] != 0) count.
typedef struct {
  k2_operand q[2];
  k2_operand k[2];
  int pieces;  // 1 (plain heads) or 2 (MLA: [q^C | q^R] . [k^C | k^R])
  int dtype;   // K2_F32 or K2_BF16, the same for every piece
  const uint8_t* key_mask;
  int64_t mask_sb, mask_st;
  int64_t batch, heads, seq;
  float scale;
} k2_max_logit_args;

// Writes max_{b, j <= i} logit(b, h, i, j) into out[h] for every head (-inf where no pair counts, NaN if any
// counted logit is NaN). Runs on up to `threads` OpenMP threads.
void k2_max_logit_cpu(const k2_max_logit_args* args, float* out, int threads);

// The same on the GPU: args' pointers and `out` are device memory, work is queued on `stream` (a cudaStream_t).
// Returns the cudaError_t of the launch (0 on success).
int k2_max_logit_cuda(const k2_max_logit_args* args, float* out, void* stream);

#ifdef __cplusplus
}
#endif
