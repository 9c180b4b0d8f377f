// CUDA max-logit kernel. One thread block owns kBQ queries of one (batch, head) and walks the key blocks up to the
// diagonal; query and key tiles go through shared memory kBD dimensions at a time, each thread keeps a 4 x 4 block
// of logits in registers. Block maxima meet in one atomic per block. No torch headers: see bind_cuda.cpp.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <math.h>

#include "max_logit.h"

namespace {

constexpr int kBQ = 64;       // queries per block
constexpr int kBK = 64;       // keys per tile
constexpr int kBD = 16;       // dimensions per shared-memory stage
constexpr int kSide = 16;     // threads per side of the 16 x 16 thread grid
constexpr int kPer = kBQ / kSide;  // logits per thread and side (4)
constexpr int kThreads = kSide * kSide;

__device__ __forceinline__ float as_float(float v) { return v; }
__device__ __forceinline__ float as_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Max that lets a NaN win, like torch.amax.
__device__ __forceinline__ float nan_max(float acc, float value) {
  return (value > acc || value != value) ? value : acc;
}

__device__ void atomic_nan_max(float* address, float value) {
  int* bits = reinterpret_cast<int*>(address);
  int seen = *bits;
  while (true) {
    const float current = __int_as_float(seen);
    const float wanted = nan_max(current, value);
    if (wanted == current || current != current) return;
    const int before = atomicCAS(bits, seen, __float_as_int(wanted));
    if (before == seen) return;
    seen = before;
  }
}

// Element (b, h, row, d) of the pieces laid side by side along d.
template <typename T>
__device__ __forceinline__ float fetch(const k2_operand* ops, int64_t b, int64_t h, int64_t row, int64_t d) {
  const int p = d < ops[0].dim ? 0 : 1;
  const k2_operand& op = ops[p];
  const int64_t col = p == 0 ? d : d - ops[0].dim;
  return as_float(static_cast<const T*>(op.data)[b * op.sb + h * op.sh + row * op.st + col]);
}

__global__ void fill_kernel(float* out, int64_t n, float value) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = value;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) max_logit_kernel(k2_max_logit_args a, int64_t D, float* out) {
  __shared__ float qs[kBD][kBQ + 4];  // [dimension][query], padded against bank conflicts
  __shared__ float ks[kBD][kBK + 4];
  __shared__ float warp_best[kThreads / 32];
  const int64_t h = blockIdx.x % a.heads;
  const int64_t b = blockIdx.x / a.heads;
  const int64_t i0 = (gridDim.y - 1 - blockIdx.y) * static_cast<int64_t>(kBQ);  // heaviest blocks launch first
  const int tx = threadIdx.x % kSide;
  const int ty = threadIdx.x / kSide;
  const int64_t key_end = min(a.seq, i0 + kBQ);
  float best = -INFINITY;
  for (int64_t j0 = 0; j0 < key_end; j0 += kBK) {
    float acc[kPer][kPer] = {};
    for (int64_t d0 = 0; d0 < D; d0 += kBD) {
      for (int e = threadIdx.x; e < kBQ * kBD; e += kThreads) {
        const int r = e / kBD;
        const int d = e % kBD;
        const bool in_d = d0 + d < D;
        qs[d][r] = (in_d && i0 + r < a.seq) ? fetch<T>(a.q, b, h, i0 + r, d0 + d) : 0.0f;
        ks[d][r] = (in_d && j0 + r < a.seq) ? fetch<T>(a.k, b, h, j0 + r, d0 + d) : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int d = 0; d < kBD; ++d) {
        float qv[kPer], kv[kPer];
#pragma unroll
        for (int x = 0; x < kPer; ++x) {
          qv[x] = qs[d][ty + kSide * x];
          kv[x] = ks[d][tx + kSide * x];
        }
#pragma unroll
        for (int x = 0; x < kPer; ++x)
#pragma unroll
          for (int y = 0; y < kPer; ++y) acc[x][y] = fmaf(qv[x], kv[y], acc[x][y]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int x = 0; x < kPer; ++x) {
      const int64_t i = i0 + ty + kSide * x;
#pragma unroll
      for (int y = 0; y < kPer; ++y) {
        const int64_t j = j0 + tx + kSide * y;
        if (i >= a.seq || j > i) continue;  // j <= i < seq, so the mask read below stays in bounds
        if (a.key_mask != nullptr && a.key_mask[b * a.mask_sb + j * a.mask_st] == 0) continue;
        best = nan_max(best, acc[x][y] * a.scale);
      }
    }
  }
  for (int offset = 16; offset > 0; offset /= 2) best = nan_max(best, __shfl_down_sync(0xffffffffu, best, offset));
  if (threadIdx.x % 32 == 0) warp_best[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) best = nan_max(best, warp_best[w]);
    atomic_nan_max(out + h, best);
  }
}

}  // namespace

extern "C" int k2_max_logit_cuda(const k2_max_logit_args* args, float* out, void* stream) {
  const k2_max_logit_args& a = *args;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (a.heads == 0) return cudaSuccess;
  fill_kernel<<<static_cast<unsigned>((a.heads + 255) / 256), 256, 0, s>>>(out, a.heads, -INFINITY);
  if (a.batch == 0 || a.seq == 0) return cudaGetLastError();
  int64_t D = 0;
  for (int p = 0; p < a.pieces; ++p) D += a.q[p].dim;
  const int64_t query_blocks = (a.seq + kBQ - 1) / kBQ;
  if (query_blocks > 65535 || a.batch * a.heads > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const dim3 grid(static_cast<unsigned>(a.batch * a.heads), static_cast<unsigned>(query_blocks));
  if (a.dtype == K2_BF16) {
    max_logit_kernel<__nv_bfloat16><<<grid, kThreads, 0, s>>>(a, D, out);
  } else {
    max_logit_kernel<float><<<grid, kThreads, 0, s>>>(a, D, out);
  }
  return cudaGetLastError();
}
