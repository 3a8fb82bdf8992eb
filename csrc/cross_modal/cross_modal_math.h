// Six-pathway cross-modal block: the pathway table and the dropout RNG, shared
// by the CPU and CUDA kernels (no torch headers, so nvcc compiles it alone).
//
// Pathway p = x2y: queries from modality x, keys and values from modality y.
// Modalities: 0 = video, 1 = audio, 2 = text. Pathway order (also the order of
// every per-pathway argument of the ops): v2a, v2t, a2v, a2t, t2v, t2a.
//
// Dropout masks come from Philox-4x32-10 (Salmon et al., SC'11), a counter-
// based generator: element (stream, row i, column j) of a mask uses
//   key     = (lo32(seed), hi32(seed))
//   counter = (j / 4, i, stream, b + offset)        word j % 4 of the output
// and is kept iff that 32-bit word >= threshold(p) = round(p * 2^32). A kept
// element is scaled by 1 / (1 - p). Streams: attention probabilities of
// pathway p, head h: stream = 16 * h + p; output dropout of modality m:
// stream = 6 + m. The backward regenerates exactly the forward's mask.
#pragma once

#include <cstdint>

#include "common/philox.h"

namespace maven_fast::cross_modal {

constexpr int kNumModalities = 3;
constexpr int kNumPathways = 6;
// Query (x) and key/value (y) modality of each pathway x2y.
constexpr int kQueryModality[kNumPathways] = {0, 0, 1, 1, 2, 2};
constexpr int kKeyModality[kNumPathways] = {1, 2, 0, 2, 0, 1};

// How a pathway is computed (chosen by the caller, see maven_fast/ops/cross_modal.py).
enum PathwayMode : int64_t {
  // Q/K/V projections, attention with head size D/H, out_proj per query row.
  kGeneral = 0,
  // Key length Ty == 1: softmax over one key is 1 (0 if masked), so the output
  // does not depend on the query; no Q, no K projection, out_proj once per item.
  kKeyLen1 = 1,
  // Weight absorption: scores q_h W_k,h y_j / sqrt(d_h) and values y_j are
  // taken on the raw key sequence y (head size D, K = V = y shared by heads);
  // W_v,h is applied after the weighted sum. The long side is never projected.
  kAbsorbed = 2,
};

// kKeyModality[p] as arithmetic (device code cannot index the host array).
MF_HOST_DEVICE constexpr int key_modality(int pathway) {
  return (1 | 2 << 2 | 0 << 4 | 2 << 6 | 0 << 8 | 1 << 10) >> (2 * pathway) & 3;
}
static_assert(key_modality(0) == kKeyModality[0] && key_modality(1) == kKeyModality[1] &&
              key_modality(2) == kKeyModality[2] && key_modality(3) == kKeyModality[3] &&
              key_modality(4) == kKeyModality[4] && key_modality(5) == kKeyModality[5]);

constexpr uint32_t attention_stream(int pathway, int64_t head) {
  return static_cast<uint32_t>(16 * head + pathway);
}
constexpr uint32_t output_stream(int modality) { return static_cast<uint32_t>(6 + modality); }

// The counter-based generator and the keep threshold (common/philox.h).
using maven_fast::dropout_threshold;
using maven_fast::Philox;
using maven_fast::philox_of;

}  // namespace maven_fast::cross_modal
