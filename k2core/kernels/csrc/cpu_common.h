// Pieces both CPU kernels share: fp32/bf16 row loading, a NaN-propagating max, GCC vector types for the SSE, AVX2 and
// AVX-512 variants of their micro-kernels, and the run-time choice of the widest variant this CPU supports (the
// binary itself is built for baseline x86-64, so it is portable).
#pragma once

#include <stdint.h>

#include <cstring>
#include <limits>

#include "max_logit.h"

namespace k2cpu {

constexpr float kEmpty = -std::numeric_limits<float>::infinity();
typedef float Lanes4 __attribute__((vector_size(16)));   // SSE
typedef float Lanes8 __attribute__((vector_size(32)));   // AVX2
typedef float Lanes16 __attribute__((vector_size(64)));  // AVX-512
typedef int32_t Flags4 __attribute__((vector_size(16)));  // per-lane comparison results (and integers) of those widths
typedef int32_t Flags8 __attribute__((vector_size(32)));
typedef int32_t Flags16 __attribute__((vector_size(64)));

// Max that lets a NaN win, like torch.amax, so a diverged step shows up as NaN instead of being hidden.
inline float nan_max(float acc, float value) { return (value > acc || value != value) ? value : acc; }

// n consecutive elements of an fp32 or bf16 row, as fp32, to dst[0], dst[stride], ...
inline void convert(const void* src, int dtype, int64_t n, float* dst, int64_t stride) {
  if (dtype == K2_BF16) {
    const uint16_t* in = static_cast<const uint16_t*>(src);
    for (int64_t d = 0; d < n; ++d) {
      const uint32_t bits = static_cast<uint32_t>(in[d]) << 16;
      std::memcpy(dst + d * stride, &bits, sizeof(float));
    }
  } else {
    const float* in = static_cast<const float*>(src);
    for (int64_t d = 0; d < n; ++d) dst[d * stride] = in[d];
  }
}

// Row `row` of (b, h) of one operand, as fp32, to dst[d * stride].
inline void load_operand_row(const k2_operand& op, int dtype, int64_t b, int64_t h, int64_t row, float* dst,
                             int64_t stride) {
  const size_t bytes = dtype == K2_BF16 ? 2 : 4;
  convert(static_cast<const char*>(op.data) + (b * op.sb + h * op.sh + row * op.st) * bytes, dtype, op.dim, dst,
          stride);
}

// The AVX-512, AVX2+FMA or baseline variant of a micro-kernel, whichever is the widest this CPU runs.
template <typename Fn>
Fn pick_widest(Fn avx512, Fn avx2, Fn baseline) {
#if defined(__GNUC__) && defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) return avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return avx2;
#endif
  return baseline;
}

}  // namespace k2cpu
