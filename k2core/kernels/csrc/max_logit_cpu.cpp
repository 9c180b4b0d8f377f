// CPU max-logit kernel: keys packed once to fp32 tiles, then one OpenMP work item per (query block, batch, head)
// multiplies its kBQ queries against the kBK-key tiles at or below the diagonal, reducing each register block of
// logits to a running max on the spot. No [T, T] logits ever exist, not even one tile's worth.
#include "max_logit.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu_common.h"

namespace {

using namespace k2cpu;

constexpr int64_t kBQ = 48;    // queries per work item (a multiple of kRows)
constexpr int64_t kBK = 64;    // keys per packed tile (a multiple of kCols)
constexpr int64_t kRows = 6;   // register block: queries (6 x 16 floats fit the 16 AVX2 registers with room to load)
constexpr int kCols = 16;      // register block: keys (one AVX-512 or two AVX2 vectors)

// Row `row` of (b, h), all pieces side by side along d, as fp32 to dst[d * stride].
void load_row(const k2_max_logit_args& a, const k2_operand* ops, int64_t b, int64_t h, int64_t row, float* dst,
              int64_t stride) {
  for (int p = 0; p < a.pieces; ++p) {
    load_operand_row(ops[p], a.dtype, b, h, row, dst, stride);
    dst += ops[p].dim * stride;
  }
}

// One kBQ-query x kBK-key tile: q rows [rows][D] and key columns kt [D][kBK], both zero-padded.
struct Tile {
  const float* q;
  const float* kt;
  int64_t D, rows, cols;
  int64_t diagonal;     // i0 - j0: row r sees columns c <= diagonal + r
  const uint8_t* keep;  // key mask of the tile's columns (keep[c * keep_stride] != 0) or nullptr for all
  int64_t keep_stride;
  float scale;
};

// Max of scale * q[r] . kt[:, c] over the visible (r, c) of a tile. A register block of kRows queries x kCols keys
// loads kCols keys once per dimension (kCols / W vectors of W floats) and reuses them for kRows broadcast queries;
// a block entirely visible is reduced with vector compares. Inlined into one function per instruction set below.
template <typename Lanes, typename Flags>
__attribute__((always_inline)) inline float tile_max_lanes(const Tile& t) {
  constexpr int W = sizeof(Lanes) / sizeof(float);
  constexpr int kVecs = kCols / W;
  Lanes lanes_best = Lanes{} + kEmpty;
  Flags lanes_nan = {};  // the vector max drops NaNs, so they are flagged separately
  float best = kEmpty;
  for (int64_t c0 = 0; c0 < t.cols; c0 += kCols) {  // one key strip (D x kCols) stays in L1 across the rows
    for (int64_t r0 = 0; r0 < t.rows; r0 += kRows) {
      if (c0 > t.diagonal + r0 + kRows - 1) continue;  // every key of the strip is after every query of the block
      Lanes block[kRows][kVecs] = {};
      for (int64_t d = 0; d < t.D; ++d) {
        Lanes keys[kVecs];
        std::memcpy(keys, t.kt + d * kBK + c0, sizeof(keys));
        for (int64_t r = 0; r < kRows; ++r) {
          const float qv = t.q[(r0 + r) * t.D + d];
          for (int v = 0; v < kVecs; ++v) block[r][v] += qv * keys[v];
        }
      }
      for (int64_t r = 0; r < kRows && r0 + r < t.rows; ++r) {
        const int64_t visible = std::min(t.cols, t.diagonal + r0 + r + 1) - c0;
        if (visible >= kCols && t.keep == nullptr) {
          for (int v = 0; v < kVecs; ++v) {
            const Lanes x = block[r][v] * t.scale;
            lanes_best = x > lanes_best ? x : lanes_best;
            lanes_nan |= x != x;
          }
          continue;
        }
        float logits[kCols];
        std::memcpy(logits, block[r], sizeof(logits));
        for (int64_t c = 0; c < std::min<int64_t>(visible, kCols); ++c) {
          if (t.keep == nullptr || t.keep[(c0 + c) * t.keep_stride] != 0) best = nan_max(best, logits[c] * t.scale);
        }
      }
    }
  }
  for (int l = 0; l < W; ++l) {
    best = nan_max(best, lanes_nan[l] ? std::numeric_limits<float>::quiet_NaN() : lanes_best[l]);
  }
  return best;
}

using TileMax = float (*)(const Tile&);

float tile_max_default(const Tile& t) { return tile_max_lanes<Lanes4, Flags4>(t); }

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx512f"))) float tile_max_avx512(const Tile& t) { return tile_max_lanes<Lanes16, Flags16>(t); }
__attribute__((target("avx2,fma"))) float tile_max_avx2(const Tile& t) { return tile_max_lanes<Lanes8, Flags8>(t); }
#endif

#if defined(__GNUC__) && defined(__x86_64__)
const TileMax tile_max = pick_widest<TileMax>(tile_max_avx512, tile_max_avx2, tile_max_default);
#else
const TileMax tile_max = tile_max_default;
#endif

// Keys of every (batch, key head) packed once as fp32 tiles [key block][D][kBK], zero-padded, so the micro-kernel
// reads kCols consecutive keys per dimension. Keys shared by all heads (head stride 0) are packed once.
struct PackedKeys {
  int64_t heads, blocks, D;
  std::vector<float> data;

  int64_t offset(int64_t b, int64_t h, int64_t kb) const {
    return ((b * heads + (heads == 1 ? 0 : h)) * blocks + kb) * D * kBK;
  }
};

PackedKeys pack_keys(const k2_max_logit_args& a, int64_t D, int threads) {
  bool shared = true;
  for (int p = 0; p < a.pieces; ++p) shared = shared && a.k[p].sh == 0;
  PackedKeys keys{shared ? 1 : a.heads, (a.seq + kBK - 1) / kBK, D, {}};
  keys.data.assign(a.batch * keys.heads * keys.blocks * D * kBK, 0.0f);
#pragma omp parallel for num_threads(threads) collapse(2) schedule(static)
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t h = 0; h < keys.heads; ++h) {
      for (int64_t j = 0; j < a.seq; ++j) {
        load_row(a, a.k, b, h, j, keys.data.data() + keys.offset(b, h, j / kBK) + j % kBK, kBK);
      }
    }
  }
  return keys;
}

// Max over one query block of (b, h): every key tile up to the diagonal, causal and key mask applied.
float block_max(const k2_max_logit_args& a, const PackedKeys& keys, int64_t b, int64_t h, int64_t qb, float* qbuf) {
  const int64_t i0 = qb * kBQ;
  const int64_t rows = std::min(kBQ, a.seq - i0);
  std::fill(qbuf, qbuf + kBQ * keys.D, 0.0f);
  for (int64_t r = 0; r < rows; ++r) load_row(a, a.q, b, h, i0 + r, qbuf + r * keys.D, 1);
  float best = kEmpty;
  for (int64_t j0 = 0; j0 < i0 + rows; j0 += kBK) {
    const uint8_t* keep = a.key_mask == nullptr ? nullptr : a.key_mask + b * a.mask_sb + j0 * a.mask_st;
    const Tile tile{qbuf, keys.data.data() + keys.offset(b, h, j0 / kBK), keys.D, rows,
                    std::min(kBK, i0 + rows - j0), i0 - j0, keep, a.mask_st, a.scale};
    best = nan_max(best, tile_max(tile));
  }
  return best;
}

}  // namespace

extern "C" void k2_max_logit_cpu(const k2_max_logit_args* args, float* out, int threads) {
  const k2_max_logit_args& a = *args;
  std::fill(out, out + a.heads, kEmpty);
  if (a.batch == 0 || a.seq == 0 || a.heads == 0) return;
  threads = std::max(threads, 1);
  int64_t D = 0;
  for (int p = 0; p < a.pieces; ++p) D += a.q[p].dim;
  const PackedKeys keys = pack_keys(a, D, threads);
  const int64_t blocks = (a.seq + kBQ - 1) / kBQ;
  const int64_t bh = a.batch * a.heads;
  std::vector<float> partial(blocks * bh, kEmpty);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> qbuf(kBQ * D);
    // Later query blocks see more keys: hand them out first so the causal triangle balances across threads.
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < blocks * bh; ++item) {
      partial[item] = block_max(a, keys, (item % bh) / a.heads, item % a.heads, blocks - 1 - item / bh, qbuf.data());
    }
  }
  for (int64_t item = 0; item < blocks * bh; ++item) out[item % a.heads] = nan_max(out[item % a.heads], partial[item]);
}
