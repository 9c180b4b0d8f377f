// Fused causal attention forward on the CPU that also yields QK-Clip's per-head max logit. One OpenMP work item per
// (query block, batch, head) walks the key tiles up to the diagonal with an online softmax (running row max, running
// sum, rescaled accumulator). The running row max over the allowed keys *is* that row's max logit, so S_max costs
// nothing beyond the attention itself, and no [T, T] logits exist (one kBQ x kBK tile at a time).
#include "attention.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu_common.h"

namespace {

using namespace k2cpu;

constexpr int64_t kBQ = 48;   // queries per work item (a multiple of kRows)
constexpr int64_t kBK = 64;   // keys per packed tile (a multiple of kCols)
constexpr int64_t kRows = 6;  // register block: queries
constexpr int kCols = 16;     // register block: keys (logits) or value columns (output); a multiple of every width

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Keys as fp32 tiles [block][D][kBK] and values as [block][kBK][Dv_pad] (Dv_pad a multiple of kCols), zero-padded,
// once per (batch, key head); a key/value shared by all heads (head stride 0) is packed once.
struct Packed {
  int64_t heads, blocks, D, Dv_pad;
  std::vector<float> keys, values;

  int64_t index(int64_t b, int64_t h, int64_t kb) const { return (b * heads + (heads == 1 ? 0 : h)) * blocks + kb; }
  const float* key_tile(int64_t b, int64_t h, int64_t kb) const { return keys.data() + index(b, h, kb) * D * kBK; }
  const float* value_tile(int64_t b, int64_t h, int64_t kb) const {
    return values.data() + index(b, h, kb) * kBK * Dv_pad;
  }
};

Packed pack(const k2_attention_args& a, int threads) {
  const bool shared = a.k.sh == 0 && a.v.sh == 0;
  Packed p{shared ? 1 : a.heads, (a.seq + kBK - 1) / kBK, a.k.dim, round_up(a.v.dim, kCols), {}, {}};
  p.keys.assign(a.batch * p.heads * p.blocks * p.D * kBK, 0.0f);
  p.values.assign(a.batch * p.heads * p.blocks * kBK * p.Dv_pad, 0.0f);
#pragma omp parallel for num_threads(threads) collapse(2) schedule(static)
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t h = 0; h < p.heads; ++h) {
      for (int64_t j = 0; j < a.seq; ++j) {
        const int64_t tile = p.index(b, h, j / kBK);
        load_operand_row(a.k, a.dtype, b, h, j, p.keys.data() + tile * p.D * kBK + j % kBK, kBK);
        load_operand_row(a.v, a.dtype, b, h, j, p.values.data() + (tile * kBK + j % kBK) * p.Dv_pad, 1);
      }
    }
  }
  return p;
}

// One work item's kBQ query rows: fp32 queries, one tile of logits then weights, and the online-softmax state.
struct Rows {
  int64_t D, Dv_pad;
  std::vector<float> q, weights, acc, row_max, row_sum;
  Rows(int64_t D_, int64_t Dv_pad_)
      : D(D_), Dv_pad(Dv_pad_), q(kBQ * D_), weights(kBQ * kBK), acc(kBQ * Dv_pad_), row_max(kBQ), row_sum(kBQ) {}
};

// One key tile against the work item's rows: which keys each row may see, and where they live.
struct Tile {
  const float* kt;      // keys [D][kBK]
  const float* values;  // [kBK][Dv_pad]
  int64_t rows, cols;   // valid queries and keys
  int64_t diagonal;     // i0 - j0: row r sees columns c <= diagonal + r
  const uint8_t* keep;  // key mask of the tile's columns (keep[c * keep_stride] != 0) or nullptr for all
  int64_t keep_stride;
  float scale;
};

template <typename Lanes>
__attribute__((always_inline)) inline Lanes load(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename Lanes>
__attribute__((always_inline)) inline void store(float* p, Lanes v) {
  std::memcpy(p, &v, sizeof(v));
}

// e^x for x <= 0 (shifted logits), lane by lane: 0 below -87 (and for -inf), NaN for NaN; a degree-6 polynomial on
// [-ln2/2, ln2/2] times 2^n, relative error about 1.2e-7.
template <typename Lanes, typename Flags>
__attribute__((always_inline)) inline Lanes exp_nonpositive(Lanes x) {
  const Lanes n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;  // round(x / ln 2), exact for |n| < 2^22
  const Lanes r = (x - n * 0.693145752f) - n * 1.42860677e-6f;    // x - n ln 2 in two parts (Cody-Waite)
  const Lanes poly =
      1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666679f + r * (0.00833333377f +
                                                                                   r * 0.00138888892f)))));
  const Flags tiny = x < -87.0f;
  const Flags bits = ((tiny ? Flags{} : __builtin_convertvector(n, Flags)) + 127) << 23;  // 2^n as a float
  Lanes two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return tiny ? Lanes{} : poly * two_n;
}

// Logits of one tile: logits[r][c] = scale * q[r] . k[c], register blocks of kRows queries x kCols keys (blocks
// entirely after the diagonal are skipped; their entries are never read).
template <typename Lanes>
__attribute__((always_inline)) inline void tile_logits(const Tile& t, const Rows& s, float* logits) {
  constexpr int W = sizeof(Lanes) / sizeof(float);
  constexpr int kVecs = kCols / W;
  for (int64_t c0 = 0; c0 < t.cols; c0 += kCols) {
    for (int64_t r0 = 0; r0 < t.rows; r0 += kRows) {
      if (c0 > t.diagonal + r0 + kRows - 1) continue;
      Lanes block[kRows][kVecs] = {};
      for (int64_t d = 0; d < s.D; ++d) {
        Lanes keys[kVecs];
        for (int v = 0; v < kVecs; ++v) keys[v] = load<Lanes>(t.kt + d * kBK + c0 + v * W);
        for (int64_t r = 0; r < kRows; ++r) {
          const float qv = s.q[(r0 + r) * s.D + d];
          for (int v = 0; v < kVecs; ++v) block[r][v] += qv * keys[v];
        }
      }
      for (int64_t r = 0; r < kRows; ++r) {
        for (int v = 0; v < kVecs; ++v) store(logits + (r0 + r) * kBK + c0 + v * W, block[r][v] * t.scale);
      }
    }
  }
}

// Online-softmax step of one row over the tile: masks the logits it may not see to -inf, raises its running max,
// turns the logits into weights e^(logit - max) in place, and rescales its running sum and accumulator.
template <typename Lanes, typename Flags>
__attribute__((always_inline)) inline void softmax_row(const Tile& t, Rows& s, int64_t r, float* row) {
  constexpr int W = sizeof(Lanes) / sizeof(float);
  const int64_t visible = std::max<int64_t>(0, std::min(t.cols, t.diagonal + r + 1));
  float tile_max = kEmpty;
  for (int64_t c = 0; c < kBK; ++c) {
    const bool keep = c < visible && (t.keep == nullptr || t.keep[c * t.keep_stride] != 0);
    row[c] = keep ? row[c] : kEmpty;
    tile_max = nan_max(tile_max, row[c]);
  }
  if (tile_max == kEmpty) {  // nothing to see here: zero weights, state unchanged
    std::fill(row, row + kBK, 0.0f);
    return;
  }
  const float old_max = s.row_max[r];
  const float new_max = nan_max(old_max, tile_max);
  Lanes sum = {};
  for (int64_t c = 0; c < kBK; c += W) {
    const Lanes weight = exp_nonpositive<Lanes, Flags>(load<Lanes>(row + c) - new_max);
    store(row + c, weight);
    sum += weight;
  }
  float total = 0.0f;
  for (int l = 0; l < W; ++l) total += sum[l];
  const float rescale = exp_nonpositive<Lanes, Flags>(Lanes{} + (old_max - new_max))[0];  // 0 when old_max = -inf
  s.row_sum[r] = s.row_sum[r] * rescale + total;
  s.row_max[r] = new_max;
  float* acc = s.acc.data() + r * s.Dv_pad;
  for (int64_t e = 0; e < s.Dv_pad; e += W) store(acc + e, load<Lanes>(acc + e) * rescale);
}

// acc[r] += sum_c weights[r][c] * v[c], register blocks of kRows rows x kCols value columns.
template <typename Lanes>
__attribute__((always_inline)) inline void tile_values(const Tile& t, Rows& s, const float* weights) {
  constexpr int W = sizeof(Lanes) / sizeof(float);
  constexpr int kVecs = kCols / W;
  for (int64_t r0 = 0; r0 < t.rows; r0 += kRows) {
    const int64_t cols = std::min(t.cols, t.diagonal + r0 + kRows);  // later keys have zero weight for every row
    if (cols <= 0) continue;
    for (int64_t e0 = 0; e0 < s.Dv_pad; e0 += kCols) {
      Lanes block[kRows][kVecs];
      for (int64_t r = 0; r < kRows; ++r) {
        for (int v = 0; v < kVecs; ++v) block[r][v] = load<Lanes>(s.acc.data() + (r0 + r) * s.Dv_pad + e0 + v * W);
      }
      for (int64_t c = 0; c < cols; ++c) {
        Lanes values[kVecs];
        for (int v = 0; v < kVecs; ++v) values[v] = load<Lanes>(t.values + c * s.Dv_pad + e0 + v * W);
        for (int64_t r = 0; r < kRows; ++r) {
          const float w = weights[(r0 + r) * kBK + c];
          for (int v = 0; v < kVecs; ++v) block[r][v] += w * values[v];
        }
      }
      for (int64_t r = 0; r < kRows; ++r) {
        for (int v = 0; v < kVecs; ++v) store(s.acc.data() + (r0 + r) * s.Dv_pad + e0 + v * W, block[r][v]);
      }
    }
  }
}

template <typename Lanes, typename Flags>
__attribute__((always_inline)) inline void tile_step_lanes(const Tile& t, Rows& s) {
  float* weights = s.weights.data();
  tile_logits<Lanes>(t, s, weights);
  for (int64_t r = 0; r < t.rows; ++r) softmax_row<Lanes, Flags>(t, s, r, weights + r * kBK);
  tile_values<Lanes>(t, s, weights);
}

using TileStep = void (*)(const Tile&, Rows&);

void tile_step_default(const Tile& t, Rows& s) { tile_step_lanes<Lanes4, Flags4>(t, s); }

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx512f"))) void tile_step_avx512(const Tile& t, Rows& s) {
  tile_step_lanes<Lanes16, Flags16>(t, s);
}
__attribute__((target("avx2,fma"))) void tile_step_avx2(const Tile& t, Rows& s) {
  tile_step_lanes<Lanes8, Flags8>(t, s);
}
const TileStep tile_step = pick_widest<TileStep>(tile_step_avx512, tile_step_avx2, tile_step_default);
#else
const TileStep tile_step = tile_step_default;
#endif

// One work item: attention of queries [i0, i0 + rows) of (b, h) into out [T, Dv] of (b, h); returns their max logit
// over allowed pairs.
float query_block(const k2_attention_args& a, const Packed& p, int64_t b, int64_t h, int64_t i0, Rows& s,
                  float* out) {
  const int64_t rows = std::min(kBQ, a.seq - i0);
  std::fill(s.q.begin(), s.q.end(), 0.0f);
  for (int64_t r = 0; r < rows; ++r) load_operand_row(a.q, a.dtype, b, h, i0 + r, s.q.data() + r * s.D, 1);
  std::fill(s.acc.begin(), s.acc.end(), 0.0f);
  std::fill(s.row_max.begin(), s.row_max.end(), kEmpty);
  std::fill(s.row_sum.begin(), s.row_sum.end(), 0.0f);
  for (int64_t j0 = 0; j0 < i0 + rows; j0 += kBK) {
    const int64_t kb = j0 / kBK;
    const uint8_t* keep = a.key_mask == nullptr ? nullptr : a.key_mask + b * a.mask_sb + j0 * a.mask_st;
    const Tile tile{p.key_tile(b, h, kb), p.value_tile(b, h, kb), rows, std::min(kBK, a.seq - j0), i0 - j0,
                    keep, a.mask_st, a.scale};
    tile_step(tile, s);
  }
  const int64_t Dv = a.v.dim;
  float best = kEmpty;
  for (int64_t r = 0; r < rows; ++r) {
    const float sum = s.row_sum[r];
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;  // a row with no allowed key gets a zero output
    for (int64_t e = 0; e < Dv; ++e) out[(i0 + r) * Dv + e] = s.acc[r * s.Dv_pad + e] * inv;
    best = nan_max(best, s.row_max[r]);
  }
  return best;
}

}  // namespace

extern "C" void k2_attention_cpu(const k2_attention_args* args, float* out, float* max_logit, int threads) {
  const k2_attention_args& a = *args;
  std::fill(max_logit, max_logit + a.heads, kEmpty);
  if (a.batch == 0 || a.seq == 0 || a.heads == 0) return;
  threads = std::max(threads, 1);
  const Packed p = pack(a, threads);
  const int64_t blocks = (a.seq + kBQ - 1) / kBQ;
  const int64_t bh = a.batch * a.heads;
  std::vector<float> partial(blocks * bh, kEmpty);
#pragma omp parallel num_threads(threads)
  {
    Rows rows(p.D, p.Dv_pad);
    // Later query blocks see more keys: hand them out first so the causal triangle balances across threads.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < blocks * bh; ++item) {
      const int64_t pair = item % bh;  // b * heads + h, the row-major index of out [B, H, T, Dv]
      partial[item] = query_block(a, p, pair / a.heads, pair % a.heads, (blocks - 1 - item / bh) * kBQ, rows,
                                  out + pair * a.seq * a.v.dim);
    }
  }
  for (int64_t item = 0; item < blocks * bh; ++item) {
    max_logit[item % a.heads] = nan_max(max_logit[item % a.heads], partial[item]);
  }
}
