// Six-pathway cross-modal block, device-independent orchestration.
//
// Forward (D model size, H heads, d_h = D / H; pathway p = x2y):
//   Y_m    = x_m W_m^T + b_m               grouped projection of modality m into one
//                                          [B*T_m, n_in*D] buffer; W_m = the in_proj
//                                          rows of every slot (see Plan)
//   general:   O_p = Attn(Q_p, K_p, V_p)   (all pathways in ONE attention call)
//   absorbed:  qt_ph = Q_ph W_k,ph;  z_ph = Attn(qt_ph, x_y, x_y) (scale 1 / sqrt(d_h));
//              O_ph = z_ph W_v,ph^T + psum_ph b_v,ph
//   rows_m = [O_p1 | O_p2] [W_o,p1 | W_o,p2]^T + b_o,p1 + b_o,p2   (K = 2D)
//   key length 1: c_p = V_p W_o,p^T per item (per head under attention dropout)
//   y_m    = LN(Dropout((x_m + rows_m + items_m) / 3))   ONE combine pass (3 modalities)
// The grouped GEMMs run slot by slot on views of the parameters (writing the
// column slices of Y_m, accumulating rows_m): on the CPU, concatenating the
// weights first costs a copy of them per call, more than the one large GEMM
// gains (measured, one thread, [M, 512] x six [512, 512] slots: cat + one GEMM
// 1.49 / 205 / 649 ms vs six slot GEMMs 1.19 / 155 / 601 ms at M = 16 / 1024
// / 4096 on a loaded 2-core EPYC). The CUDA backend may concatenate.
// The backward runs the same structure in reverse. The `saved` list (forward
// output 3, input of the backward) holds, in this order and only where the
// plan has them (see saved_present; maven_fast/ops/cross_modal.py mirrors it):
//   Y[3] (n_in > 0), O[3] (n_out > 0), u[3], stats[3],
//   lse[6] (general, absorbed), qt[6], z[6] (absorbed), psum[6] (absorbed, attention dropout),
//   rng (dropout on: int64 [2], the seed and offset of the masks, on the inputs' device)
#include "cross_modal/cross_modal_common.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "common/checks.h"

namespace maven_fast::cross_modal {
namespace {

constexpr const char* kModalityName[kNumModalities] = {"video", "audio", "text"};
constexpr const char* kPathwayName[kNumPathways] = {"v2a", "v2t", "a2v", "a2t", "t2v", "t2a"};
constexpr const char* kXName[kNumModalities] = {"x_v", "x_a", "x_t"};
constexpr const char* kLenName[kNumModalities] = {"len_v", "len_a", "len_t"};

enum SavedIndex { kY = 0, kO = 3, kU = 6, kStats = 9, kLse = 12, kQt = 18, kZ = 24, kPsum = 30, kRng = 36 };

// The op's stages as named ranges in torch.profiler traces
// ("maven_fast::cross_modal.forward.attention", ...); nothing is recorded
// when no profiler listens.
class Stages {
 public:
  explicit Stages(const char* pass) : pass_(pass) {}
  void next(const char* stage) {
    range_.reset();
    range_.emplace(at::RecordScope::USER_SCOPE);
    if (range_->isActive()) range_->before(std::string("maven_fast::cross_modal.") + pass_ + "." + stage);
  }
  void end() { range_.reset(); }

 private:
  const char* pass_;
  std::optional<at::RecordFunction> range_;
};

at::ScalarType acc_type(at::ScalarType s) { return s == at::kDouble ? at::kDouble : at::kFloat; }

void check_param(const at::Tensor& t, const at::Tensor& ref, const char* op, const std::string& name,
                 at::IntArrayRef shape) {
  TORCH_CHECK(t.defined(), op, ": `", name, "` is undefined");
  TORCH_CHECK(t.sizes() == shape, op, ": `", name, "` must have shape ", shape, ", got ",
              t.sizes());
  check_same_dtype(t, ref, op, name.c_str(), "x_v");
  check_same_device(t, ref, op, name.c_str(), "x_v");
}

// Validates everything and normalises layouts (contiguous activations and
// parameters, int64 lengths); returns the plan.
Plan check_and_plan(const char* op, BlockArgs& a) {
  const at::Tensor& xv = a.x[0];
  for (int m = 0; m < kNumModalities; ++m) {
    check_defined(a.x[m], op, kXName[m]);
    check_dim(a.x[m], 3, op, kXName[m], "[B, T, D] (batch, time, features)");
    check_floating(a.x[m], op, kXName[m]);
    check_same_dtype(a.x[m], xv, op, kXName[m], "x_v");
    check_same_device(a.x[m], xv, op, kXName[m], "x_v");
  }
  const int64_t B = xv.size(0), D = xv.size(2);
  for (int m = 1; m < kNumModalities; ++m) {
    TORCH_CHECK(a.x[m].size(0) == B && a.x[m].size(2) == D, op, ": `", kXName[m],
                "` must have shape [B, T, D] = [", B, ", T, ", D, "] to match x_v ", xv.sizes(),
                ", got ", a.x[m].sizes());
  }
  TORCH_CHECK(D > 0, op, ": the model size D (last dimension of x_v) must be positive");
  TORCH_CHECK(a.heads >= 1 && D % a.heads == 0, op, ": num_heads = ", a.heads,
              " must be >= 1 and divide the model size D = ", D);
  for (int m = 0; m < kNumModalities; ++m) {
    TORCH_CHECK(a.x[m].size(1) >= 1, op, ": `", kXName[m],
                "` has no time steps (T = 0); pass at least one (padded) step with length 0");
    const at::Tensor& l = a.len[m];
    TORCH_CHECK(l.defined(), op, ": `", kLenName[m], "` is undefined");
    TORCH_CHECK(!at::isFloatingType(l.scalar_type()) && !at::isComplexType(l.scalar_type()) &&
                    l.scalar_type() != at::kBool,
                op, ": `", kLenName[m], "` must be an integer tensor, got ", l.scalar_type());
    TORCH_CHECK(l.dim() == 1 && l.size(0) == B, op, ": `", kLenName[m], "` must have shape [B] = [",
                B, "], got ", l.sizes());
    check_same_device(l, xv, op, kLenName[m], "x_v");
    a.len[m] = l.to(at::kLong).contiguous();
    a.x[m] = a.x[m].contiguous();
  }
  if (B > 0 && a.check_lengths_on_host) {
    // min and max of the three lengths in ONE host read (one sync on a GPU).
    std::vector<at::Tensor> ext;
    for (int m = 0; m < kNumModalities; ++m) {
      ext.push_back(a.len[m].min());
      ext.push_back(a.len[m].max());
    }
    const at::Tensor lim = at::stack(ext).to(at::kCPU);
    const int64_t* v = lim.const_data_ptr<int64_t>();
    for (int m = 0; m < kNumModalities; ++m) {
      const int64_t lo = v[2 * m], hi = v[2 * m + 1];
      TORCH_CHECK(lo >= 0 && hi <= a.x[m].size(1), op, ": `", kLenName[m],
                  "` values must be in [0, T] = [0, ", a.x[m].size(1), "] (T = ", kXName[m],
                  ".size(1)), got values in [", lo, ", ", hi, "]");
    }
  }
  TORCH_CHECK(a.in_w.size() == kNumPathways && a.in_b.size() == kNumPathways &&
                  a.out_w.size() == kNumPathways && a.out_b.size() == kNumPathways,
              op, ": in_proj_weight, in_proj_bias, out_proj_weight and out_proj_bias must each list "
              "the 6 pathways v2a, v2t, a2v, a2t, t2v, t2a; got ", a.in_w.size(), ", ",
              a.in_b.size(), ", ", a.out_w.size(), ", ", a.out_b.size(), " tensors");
  for (int p = 0; p < kNumPathways; ++p) {
    const std::string n = std::string("attn_") + kPathwayName[p];
    check_param(a.in_w[p], xv, op, n + ".in_proj_weight", {3 * D, D});
    check_param(a.in_b[p], xv, op, n + ".in_proj_bias", {3 * D});
    check_param(a.out_w[p], xv, op, n + ".out_proj.weight", {D, D});
    check_param(a.out_b[p], xv, op, n + ".out_proj.bias", {D});
    a.in_w[p] = a.in_w[p].contiguous();
    a.in_b[p] = a.in_b[p].contiguous();
    a.out_w[p] = a.out_w[p].contiguous();
    a.out_b[p] = a.out_b[p].contiguous();
  }
  check_param(a.ln_w, xv, op, "ln_weight", {D});
  check_param(a.ln_b, xv, op, "ln_bias", {D});
  a.ln_w = a.ln_w.contiguous();
  a.ln_b = a.ln_b.contiguous();
  TORCH_CHECK(a.ln_eps > 0.0, op, ": ln_eps must be positive, got ", a.ln_eps);
  TORCH_CHECK(a.attn_p >= 0.0 && a.attn_p < 1.0, op, ": attn_dropout_p must be in [0, 1), got ",
              a.attn_p);
  TORCH_CHECK(a.out_p >= 0.0 && a.out_p < 1.0, op, ": dropout_p must be in [0, 1), got ", a.out_p);
  TORCH_CHECK(a.modes.size() == kNumPathways, op, ": modes must list 6 pathway modes, got ",
              a.modes.size());

  Plan P;
  P.batch = B;
  P.d = D;
  P.heads = a.heads;
  P.head_dim = D / a.heads;
  for (int m = 0; m < kNumModalities; ++m) P.t[m] = a.x[m].size(1);
  P.attn_p = a.training ? a.attn_p : 0.0;
  P.out_p = a.training ? a.out_p : 0.0;
  if (a.rng.has_value() && a.rng->defined()) {
    TORCH_CHECK(a.rng->numel() == 2 && a.rng->scalar_type() == at::kLong, op,
                ": `rng` must be an int64 tensor [2] (seed, offset), got ", a.rng->scalar_type(),
                " ", a.rng->sizes());
    TORCH_CHECK(a.rng->is_cpu() || a.rng->device() == xv.device(), op, ": `rng` is on ",
                a.rng->device(), "; pass it on the CPU or on the inputs' device ", xv.device());
    a.rng = a.rng->contiguous();
  } else {
    a.rng.reset();
  }
  for (int p = 0; p < kNumPathways; ++p) {
    const int64_t mode = a.modes[p];
    TORCH_CHECK(mode == kGeneral || mode == kKeyLen1 || mode == kAbsorbed, op, ": modes[", p,
                "] (", kPathwayName[p], ") = ", mode,
                " is not a pathway mode (0 general, 1 key length 1, 2 weight absorption)");
    TORCH_CHECK(mode != kKeyLen1 || P.t[kKeyModality[p]] == 1, op, ": modes[", p, "] (",
                kPathwayName[p], ") = 1 (key length 1) needs ", kXName[kKeyModality[p]],
                ".size(1) == 1, got ", P.t[kKeyModality[p]]);
    P.mode[p] = mode;
    P.q_slot[p] = P.k_slot[p] = P.v_slot[p] = P.o_slot[p] = -1;
  }
  for (int m = 0; m < kNumModalities; ++m) {
    for (int p = 0; p < kNumPathways; ++p) {
      if (kQueryModality[p] == m && P.mode[p] != kKeyLen1) P.q_slot[p] = P.n_in[m]++;
      if (kKeyModality[p] == m && P.mode[p] == kGeneral) {
        P.k_slot[p] = P.n_in[m]++;
        P.v_slot[p] = P.n_in[m]++;
      }
      if (kKeyModality[p] == m && P.mode[p] == kKeyLen1) P.v_slot[p] = P.n_in[m]++;
    }
    for (int p = 0; p < kNumPathways; ++p)
      if (kQueryModality[p] == m && P.mode[p] != kKeyLen1) P.o_slot[p] = P.n_out[m]++;
  }
  return P;
}

std::array<bool, kNumSaved> saved_present(const Plan& P) {
  std::array<bool, kNumSaved> on{};
  for (int m = 0; m < kNumModalities; ++m) {
    on[kY + m] = P.n_in[m] > 0;
    on[kO + m] = P.n_out[m] > 0;
    on[kU + m] = on[kStats + m] = true;
  }
  for (int p = 0; p < kNumPathways; ++p) {
    on[kLse + p] = P.mode[p] != kKeyLen1;
    on[kQt + p] = on[kZ + p] = P.mode[p] == kAbsorbed;
    on[kPsum + p] = P.mode[p] == kAbsorbed && P.attn_p > 0.0;
  }
  on[kRng] = P.attn_p > 0.0 || P.out_p > 0.0;
  return on;
}

// Where the forward's masks come from: the given `rng`, else a draw from the
// device's default generator that reserves one counter value per batch item
// (Philox counter word 3 is b + offset).
RngSource forward_rng(const BlockArgs& a, const Plan& P) {
  if (a.rng) return a.rng_from_tensor(*a.rng);
  const uint64_t increment = (static_cast<uint64_t>(std::max<int64_t>(P.batch, 1)) + 3) / 4 * 4;
  return a.draw_rng(a.x[0], increment);
}

DropoutParams dropout_params(double p, const RngSource& rng) {
  DropoutParams d;
  d.p = p;
  d.rng = rng;
  return d;
}

// Rows [part * D, (part + 1) * D) of pathway p's in_proj (0 = Q, 1 = K, 2 = V).
at::Tensor in_rows(const BlockArgs& a, int p, int part, int64_t D) {
  return a.in_w[p].narrow(0, part * D, D);
}

// (pathway, part) of every input-projection slot of modality m, in slot order.
std::vector<std::pair<int, int>> slots_of(const Plan& P, int m) {
  std::vector<std::pair<int, int>> s(P.n_in[m]);
  for (int p = 0; p < kNumPathways; ++p) {
    if (kQueryModality[p] == m && P.q_slot[p] >= 0) s[P.q_slot[p]] = {p, 0};
    if (kKeyModality[p] == m && P.k_slot[p] >= 0) s[P.k_slot[p]] = {p, 1};
    if (kKeyModality[p] == m && P.v_slot[p] >= 0) s[P.v_slot[p]] = {p, 2};
  }
  return s;
}

StridedSeq seq(const at::Tensor& t, int64_t T, int64_t col, int64_t sh) {
  // t: [B*T, W] contiguous; the sequence starts at column `col`.
  return {static_cast<char*>(t.data_ptr()) + col * t.element_size(), T * t.size(1), t.size(1), sh};
}

// An uninitialised buffer of the op (the device's allocator, e.g. the CPU
// ops' caching pool; at::empty when the device has none).
at::Tensor new_buffer(const Kernels& kern, at::IntArrayRef sizes, const at::TensorOptions& opts) {
  return kern.empty ? kern.empty(sizes, opts) : at::empty(sizes, opts);
}

// GEMMs that do not depend on each other (no call reads another's output, no
// two write the same elements), run together: by the device's batch hook (the
// CPU ops' GEMM dispatch, common/cpu_gemm.h), else one ATen call each.
class GemmBatch {
 public:
  explicit GemmBatch(const Kernels& kern) : kern_(kern) {}
  // out = beta out + alpha a b (+ bias on every row; beta 0 or 1)
  void add(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta = 0.0,
           double alpha = 1.0, const at::Tensor& bias = {}) {
    calls_.push_back({out, a, b, bias, beta, alpha});
  }
  void run() {
    if (calls_.empty()) return;
    if (kern_.gemm_batch) {
      kern_.gemm_batch(calls_);
    } else {
      for (const auto& c : calls_) aten_gemm(c);
    }
    calls_.clear();
  }

 private:
  const Kernels& kern_;
  std::vector<GemmCall> calls_;
};

// Coefficient of b_v in an absorbed pathway's output rows: psum of head h
// (attention dropout), else 1 where the item has keys and 0 where it has none.
at::Tensor bias_coef(const Plan& P, const at::Tensor& psum, const at::Tensor& key_len, int64_t tx,
                     int64_t h, const at::TensorOptions& opts) {
  if (psum.defined()) return psum.select(1, h).reshape({-1, 1}).to(opts.dtype());
  return (key_len > 0).to(opts.dtype()).view({P.batch, 1}).expand({P.batch, tx}).reshape({-1, 1});
}

}  // namespace

BlockArgs make_block_args(const at::Tensor& x_v, const at::Tensor& x_a, const at::Tensor& x_t,
                          const at::Tensor& len_v, const at::Tensor& len_a, const at::Tensor& len_t,
                          at::TensorList in_w, at::TensorList in_b, at::TensorList out_w,
                          at::TensorList out_b, const at::Tensor& ln_w, const at::Tensor& ln_b,
                          double ln_eps, int64_t heads, at::IntArrayRef modes, double attn_p,
                          double out_p, bool training, const std::optional<at::Tensor>& rng) {
  BlockArgs a;
  a.x = {x_v, x_a, x_t};
  a.len = {len_v, len_a, len_t};
  a.in_w = in_w.vec();
  a.in_b = in_b.vec();
  a.out_w = out_w.vec();
  a.out_b = out_b.vec();
  a.ln_w = ln_w;
  a.ln_b = ln_b;
  a.ln_eps = ln_eps;
  a.heads = heads;
  a.modes = modes.vec();
  a.attn_p = attn_p;
  a.out_p = out_p;
  a.training = training;
  a.rng = rng;
  return a;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> block_forward(
    const char* op, BlockArgs a, const Kernels& kern) {
  Stages stages("forward");
  stages.next("checks");
  const Plan P = check_and_plan(op, a);
  const int64_t B = P.batch, D = P.d, H = P.heads, hd = P.head_dim;
  const auto opts = a.x[0].options();
  const auto acc_opts = opts.dtype(acc_type(a.x[0].scalar_type()));
  // Absent entries are dropped from the list (outputs never alias each other).
  std::vector<at::Tensor> saved(kNumSaved);
  const bool dropout = P.attn_p > 0.0 || P.out_p > 0.0;
  const RngSource rng = dropout ? forward_rng(a, P) : RngSource{};
  const DropoutParams attn_drop = dropout_params(P.attn_p, rng), out_drop = dropout_params(P.out_p, rng);
  if (dropout) {
    // Written by the combine kernel (the generator's values may live on the device).
    saved[kRng] = B > 0 ? at::empty({2}, opts.dtype(at::kLong)) : at::zeros({2}, opts.dtype(at::kLong));
  }

  // 1. Grouped input projections (one GEMM batch for the three modalities).
  stages.next("input_projections");
  std::array<at::Tensor, kNumModalities> Y, xf;
  GemmBatch proj(kern);
  for (int m = 0; m < kNumModalities; ++m) {
    xf[m] = a.x[m].view({B * P.t[m], D});
    const auto slots = slots_of(P, m);
    Y[m] = new_buffer(kern, {B * P.t[m], P.n_in[m] * D}, opts);
    for (size_t s = 0; s < slots.size(); ++s) {
      const auto [p, part] = slots[s];
      at::Tensor out = Y[m].narrow(1, s * D, D);
      proj.add(out, xf[m], in_rows(a, p, part, D).t(), 0.0, 1.0, a.in_b[p].narrow(0, part * D, D));
    }
    if (!slots.empty()) saved[kY + m] = Y[m];
  }
  proj.run();

  // 2. Attention outputs (row pathways) and absorbed queries.
  stages.next("attention");
  std::array<at::Tensor, kNumModalities> O;
  for (int m = 0; m < kNumModalities; ++m) O[m] = new_buffer(kern, {B * P.t[m], P.n_out[m] * D}, opts);
  std::vector<AttentionProblem> problems;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  GemmBatch fold(kern);
  for (int p = 0; p < kNumPathways; ++p) {
    if (P.mode[p] == kKeyLen1) continue;
    const int x = kQueryModality[p], y = kKeyModality[p];
    const int64_t tx = P.t[x], ty = P.t[y];
    AttentionProblem ap;
    ap.pathway = p;
    ap.batch = B;
    ap.heads = H;
    ap.tq = tx;
    ap.tk = ty;
    ap.key_len = a.len[y].data_ptr<int64_t>();
    at::Tensor lse = new_buffer(kern, {B, H, tx}, acc_opts);
    ap.lse = lse.data_ptr();
    saved[kLse + p] = lse;
    if (P.mode[p] == kGeneral) {
      ap.dk = ap.dv = hd;
      ap.q = seq(Y[x], tx, P.q_slot[p] * D, hd);
      ap.k = seq(Y[y], ty, P.k_slot[p] * D, hd);
      ap.v = seq(Y[y], ty, P.v_slot[p] * D, hd);
      ap.o = seq(O[x], tx, P.o_slot[p] * D, hd);
    } else {  // absorbed: qt_h = Q_h W_k,h, K = V = x_y shared by the heads
      at::Tensor qt = new_buffer(kern, {B * tx, H * D}, opts);
      for (int64_t h = 0; h < H; ++h) {
        at::Tensor qh = Y[x].narrow(1, P.q_slot[p] * D + h * hd, hd);
        at::Tensor wk = a.in_w[p].narrow(0, D + h * hd, hd);
        at::Tensor out = qt.narrow(1, h * D, D);
        fold.add(out, qh, wk);
      }
      at::Tensor z = new_buffer(kern, {B * tx, H * D}, opts);
      // The attention scales the scores by 1 / sqrt(d_h), as for general pathways,
      // so the fold here and the unfold in the backward are plain products.
      ap.dk = ap.dv = D;
      ap.q = seq(qt, tx, 0, D);
      ap.k = ap.v = seq(xf[y], ty, 0, 0);
      ap.o = seq(z, tx, 0, D);
      saved[kQt + p] = qt;
      saved[kZ + p] = z;
      if (P.attn_p > 0.0) {
        at::Tensor psum = new_buffer(kern, {B, H, tx}, acc_opts);
        ap.psum = psum.data_ptr();
        saved[kPsum + p] = psum;
      }
    }
    ap.scale = scale;
    problems.push_back(ap);
  }
  fold.run();
  if (!problems.empty()) kern.attention_forward(a.x[0].scalar_type(), problems, attn_drop);

  // Absorbed pathways: O_h = z_h W_v,h^T + coef b_v,h.
  stages.next("absorbed_values");
  GemmBatch absorbed(kern), absorbed_bias(kern);
  for (int p = 0; p < kNumPathways; ++p) {
    if (P.mode[p] != kAbsorbed) continue;
    const int x = kQueryModality[p], y = kKeyModality[p];
    const at::Tensor& z = saved[kZ + p];
    for (int64_t h = 0; h < H; ++h) {
      at::Tensor out = O[x].narrow(1, P.o_slot[p] * D + h * hd, hd);
      at::Tensor wv = a.in_w[p].narrow(0, 2 * D + h * hd, hd);
      absorbed.add(out, z.narrow(1, h * D, D), wv.t());
      const at::Tensor coef = bias_coef(P, saved[kPsum + p], a.len[y], P.t[x], h, opts);
      absorbed_bias.add(out, coef, a.in_b[p].narrow(0, 2 * D + h * hd, hd).view({1, hd}), 1.0);
    }
  }
  absorbed.run();
  absorbed_bias.run();

  // 3. Grouped output projections of the row pathways, and key-length-1 items.
  stages.next("output_projections");
  CombineParams cp;
  cp.ln_weight = a.ln_w.data_ptr();
  cp.ln_bias = a.ln_b.data_ptr();
  cp.eps = a.ln_eps;
  cp.attn_dropout = attn_drop;
  cp.out_dropout = out_drop;
  if (dropout) cp.rng_out = saved[kRng].data_ptr<int64_t>();
  std::array<at::Tensor, kNumModalities> rows, u, stats, y;
  std::vector<at::Tensor> keep_alive;
  // out_proj of each modality's first row pathway (and the items), then of its
  // second, which accumulates.
  GemmBatch out_first(kern), out_second(kern);
  for (int m = 0; m < kNumModalities; ++m) {
    CombineModality& M = cp.m[m];
    M.modality = m;
    M.batch = B;
    M.t = P.t[m];
    M.d = D;
    M.x = a.x[m].data_ptr();
    if (P.n_out[m] > 0) {
      at::Tensor bsum;
      for (int p = 0; p < kNumPathways; ++p)
        if (kQueryModality[p] == m && P.o_slot[p] >= 0)
          bsum = bsum.defined() ? bsum + a.out_b[p] : a.out_b[p];
      for (int p = 0; p < kNumPathways; ++p) {
        if (kQueryModality[p] != m || P.o_slot[p] < 0) continue;
        const at::Tensor o = O[m].narrow(1, P.o_slot[p] * D, D);
        if (rows[m].defined()) {
          out_second.add(rows[m], o, a.out_w[p].t(), 1.0);
        } else {
          rows[m] = new_buffer(kern, {B * P.t[m], D}, opts);
          out_first.add(rows[m], o, a.out_w[p].t(), 0.0, 1.0, bsum);
        }
      }
      M.rows = rows[m].data_ptr();
      saved[kO + m] = O[m];
    }
    for (int p = 0; p < kNumPathways; ++p) {
      if (kQueryModality[p] != m || P.mode[p] != kKeyLen1) continue;
      const int ky = kKeyModality[p];
      const at::Tensor v = Y[ky].narrow(1, P.v_slot[p] * D, D);  // [B, D]
      at::Tensor c;
      CombineModality::ItemTerm it;
      it.pathway = p;
      if (P.attn_p > 0.0) {
        c = new_buffer(kern, {B, H, D}, opts);
        for (int64_t h = 0; h < H; ++h) {
          at::Tensor out = c.select(1, h);
          out_first.add(out, v.narrow(1, h * hd, hd), a.out_w[p].narrow(1, h * hd, hd).t());
        }
        it.heads = H;
      } else {
        c = new_buffer(kern, {B, D}, opts);
        out_first.add(c, v, a.out_w[p].t());
        it.heads = 1;
      }
      keep_alive.push_back(c);
      it.c = c.data_ptr();
      it.key_len = a.len[ky].data_ptr<int64_t>();
      it.bias = a.out_b[p].data_ptr();
      M.items.push_back(it);
    }
    u[m] = new_buffer(kern, {B, P.t[m], D}, opts);
    stats[m] = new_buffer(kern, {B * P.t[m], 2}, acc_opts);
    y[m] = new_buffer(kern, {B, P.t[m], D}, opts);
    M.u = u[m].data_ptr();
    M.stats = stats[m].data_ptr();
    M.y = y[m].data_ptr();
    saved[kU + m] = u[m];
    saved[kStats + m] = stats[m];
  }
  out_first.run();
  out_second.run();
  // 4. Residual + /3 + dropout + LayerNorm of the three modalities, one pass.
  stages.next("combine");
  kern.combine_forward(a.x[0].scalar_type(), cp);
  stages.end();
  const auto present = saved_present(P);
  std::vector<at::Tensor> compact;
  for (int i = 0; i < kNumSaved; ++i) {
    if (present[i]) {
      TORCH_INTERNAL_ASSERT(saved[i].defined(), op, ": saved entry ", i, " missing");
      compact.push_back(saved[i]);
    }
  }
  return {y[0], y[1], y[2], compact};
}

std::vector<at::Tensor> block_backward(const char* op, std::array<at::Tensor, kNumModalities> grad,
                                       BlockArgs a, const std::vector<at::Tensor>& saved_list,
                                       const Kernels& kern) {
  Stages stages("backward");
  stages.next("checks");
  const Plan P = check_and_plan(op, a);
  const int64_t B = P.batch, D = P.d, H = P.heads, hd = P.head_dim;
  const auto opts = a.x[0].options();
  const auto dtype = a.x[0].scalar_type();
  const auto acc_opts = opts.dtype(acc_type(dtype));
  const auto present = saved_present(P);
  const int64_t n_present = std::count(present.begin(), present.end(), true);
  TORCH_CHECK(static_cast<int64_t>(saved_list.size()) == n_present, op,
              ": `saved` must be the list returned by maven_fast::cross_modal_block for the same "
              "arguments (", n_present, " tensors), got ", saved_list.size());
  std::vector<at::Tensor> saved(kNumSaved);
  for (int i = 0, j = 0; i < kNumSaved; ++i)
    if (present[i]) saved[i] = saved_list[j++];
  for (int m = 0; m < kNumModalities; ++m)
    if (!saved[kY + m].defined()) saved[kY + m] = new_buffer(kern, {B * P.t[m], 0}, opts);
  for (int m = 0; m < kNumModalities; ++m) {
    TORCH_CHECK(grad[m].sizes() == a.x[m].sizes(), op, ": the gradient of the ",
                kModalityName[m], " output must have shape ", a.x[m].sizes(), ", got ",
                grad[m].sizes());
    grad[m] = grad[m].to(dtype).contiguous();
  }
  if (present[kRng]) {
    const at::Tensor& r = saved[kRng];
    TORCH_CHECK(r.numel() == 2 && r.scalar_type() == at::kLong && r.is_contiguous() &&
                    (r.is_cpu() || r.device() == a.x[0].device()),
                op, ": the last `saved` entry must be the forward's int64 [2] rng state, got ",
                r.scalar_type(), " ", r.sizes(), " on ", r.device());
  }
  const RngSource rng = present[kRng] ? a.rng_from_tensor(saved[kRng]) : RngSource{};
  const DropoutParams attn_drop = dropout_params(P.attn_p, rng), out_drop = dropout_params(P.out_p, rng);
  std::array<at::Tensor, kNumModalities> xf, Y;
  for (int m = 0; m < kNumModalities; ++m) {
    xf[m] = a.x[m].view({B * P.t[m], D});
    Y[m] = saved[kY + m];
  }

  std::vector<at::Tensor> g_in_w(kNumPathways), g_in_b(kNumPathways), g_out_w(kNumPathways),
      g_out_b(kNumPathways);
  for (int p = 0; p < kNumPathways; ++p) {
    g_in_w[p] = new_buffer(kern, {3 * D, D}, opts);
    g_in_b[p] = new_buffer(kern, {3 * D}, opts);
    g_out_w[p] = new_buffer(kern, {D, D}, opts);
  }

  // 1. Combine backward: gradient of the pre-/3 sum, of the item terms, of LN.
  stages.next("combine");
  CombineParams cp;
  cp.ln_weight = a.ln_w.data_ptr();
  cp.ln_bias = a.ln_b.data_ptr();
  cp.eps = a.ln_eps;
  cp.attn_dropout = attn_drop;
  cp.out_dropout = out_drop;
  at::Tensor g_ln_w = new_buffer(kern, {D}, acc_opts), g_ln_b = new_buffer(kern, {D}, acc_opts);
  cp.grad_ln_weight = g_ln_w.data_ptr();
  cp.grad_ln_bias = g_ln_b.data_ptr();
  std::array<at::Tensor, kNumModalities> gsum, gbias_rows;
  std::array<std::vector<std::pair<int, at::Tensor>>, kNumModalities> gitems;
  for (int m = 0; m < kNumModalities; ++m) {
    CombineModality& M = cp.m[m];
    M.modality = m;
    M.batch = B;
    M.t = P.t[m];
    M.d = D;
    M.u = saved[kU + m].data_ptr();
    M.stats = saved[kStats + m].data_ptr();
    M.grad_y = grad[m].data_ptr();
    gsum[m] = new_buffer(kern, {B * P.t[m], D}, opts);
    gbias_rows[m] = new_buffer(kern, {D}, acc_opts);
    M.grad_sum = gsum[m].data_ptr();
    M.grad_bias_rows = gbias_rows[m].data_ptr();
    for (int p = 0; p < kNumPathways; ++p) {
      if (kQueryModality[p] != m || P.mode[p] != kKeyLen1) continue;
      CombineModality::ItemTerm it;
      it.pathway = p;
      it.heads = P.attn_p > 0.0 ? H : 1;
      it.key_len = a.len[kKeyModality[p]].data_ptr<int64_t>();
      it.bias = a.out_b[p].data_ptr();
      at::Tensor gc = new_buffer(kern, {B, it.heads, D}, opts);
      M.items.push_back(it);
      M.grad_c.push_back(gc.data_ptr());
      gitems[m].emplace_back(p, gc);
    }
  }
  kern.combine_backward(dtype, cp);
  for (int p = 0; p < kNumPathways; ++p)
    g_out_b[p] = gbias_rows[kQueryModality[p]].to(dtype, /*non_blocking=*/false, /*copy=*/true);

  // Gradients of the input projections' outputs; every slot is written below.
  std::array<at::Tensor, kNumModalities> dY;
  for (int m = 0; m < kNumModalities; ++m) dY[m] = new_buffer(kern, Y[m].sizes(), opts);

  // 2. Key-length-1 pathways: c_h = V_h W_o,h^T per item (one GEMM batch with step 3).
  stages.next("output_projections");
  GemmBatch outs(kern);
  for (int m = 0; m < kNumModalities; ++m) {
    for (auto& [p, gc] : gitems[m]) {
      const int ky = kKeyModality[p];
      const at::Tensor v = Y[ky].narrow(1, P.v_slot[p] * D, D);
      at::Tensor dv = dY[ky].narrow(1, P.v_slot[p] * D, D);
      if (gc.size(1) == 1) {
        const at::Tensor g = gc.select(1, 0);
        outs.add(dv, g, a.out_w[p]);
        outs.add(g_out_w[p], g.t(), v);
      } else {
        for (int64_t h = 0; h < H; ++h) {
          const at::Tensor g = gc.select(1, h);
          at::Tensor dvh = dv.narrow(1, h * hd, hd);
          outs.add(dvh, g, a.out_w[p].narrow(1, h * hd, hd));
          at::Tensor gw = g_out_w[p].narrow(1, h * hd, hd);
          outs.add(gw, g.t(), v.narrow(1, h * hd, hd));
        }
      }
    }
  }

  // 3. Grouped output projections of the row pathways: dO_m = dsum_m [W_o,p1 | W_o,p2].
  std::array<at::Tensor, kNumModalities> dO;
  for (int m = 0; m < kNumModalities; ++m) {
    if (P.n_out[m] == 0) continue;
    dO[m] = new_buffer(kern, {B * P.t[m], P.n_out[m] * D}, opts);
    for (int p = 0; p < kNumPathways; ++p) {
      if (kQueryModality[p] != m || P.o_slot[p] < 0) continue;
      at::Tensor dop = dO[m].narrow(1, P.o_slot[p] * D, D);
      outs.add(dop, gsum[m], a.out_w[p]);
      outs.add(g_out_w[p], gsum[m].t(), saved[kO + m].narrow(1, P.o_slot[p] * D, D));
    }
  }
  outs.run();

  // 4. Absorbed pathways, before the attention backward: dz_h = dO_h W_v,h,
  //    dW_v,h = dO_h^T z_h, db_v,h = coef^T dO_h, dpsum_h = dO_h b_v,h.
  stages.next("absorbed_values");
  std::array<at::Tensor, kNumPathways> dz, dqt, dpsum;
  GemmBatch absorbed(kern);
  for (int p = 0; p < kNumPathways; ++p) {
    if (P.mode[p] != kAbsorbed) continue;
    const int x = kQueryModality[p], y = kKeyModality[p];
    const int64_t tx = P.t[x];
    const at::Tensor& z = saved[kZ + p];
    const at::Tensor& psum = saved[kPsum + p];
    dz[p] = new_buffer(kern, {B * tx, H * D}, opts);
    if (psum.defined()) dpsum[p] = new_buffer(kern, {B, H, tx}, acc_opts);
    for (int64_t h = 0; h < H; ++h) {
      const at::Tensor doh = dO[x].narrow(1, P.o_slot[p] * D + h * hd, hd);
      at::Tensor dzh = dz[p].narrow(1, h * D, D);
      absorbed.add(dzh, doh, a.in_w[p].narrow(0, 2 * D + h * hd, hd));
      at::Tensor gwv = g_in_w[p].narrow(0, 2 * D + h * hd, hd);
      absorbed.add(gwv, doh.t(), z.narrow(1, h * D, D));
      const at::Tensor coef = bias_coef(P, psum, a.len[y], tx, h, opts);
      g_in_b[p].narrow(0, 2 * D + h * hd, hd).copy_(at::mm(coef.t(), doh).view({hd}));
      if (psum.defined()) {
        const at::Tensor bv = a.in_b[p].narrow(0, 2 * D + h * hd, hd);
        dpsum[p].select(1, h).copy_(at::mv(doh, bv).view({B, tx}));
      }
    }
    // K bias: softmax is invariant to the per-row constant q . b_k.
    g_in_b[p].narrow(0, D, D).zero_();
    dqt[p] = new_buffer(kern, {B * tx, H * D}, opts);
  }
  absorbed.run();

  // 5. ONE attention backward for every general and absorbed pathway.
  stages.next("attention");
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  std::vector<AttentionProblem> problems;
  for (int p = 0; p < kNumPathways; ++p) {
    if (P.mode[p] == kKeyLen1) continue;
    const int x = kQueryModality[p], y = kKeyModality[p];
    const int64_t tx = P.t[x], ty = P.t[y];
    AttentionProblem ap;
    ap.pathway = p;
    ap.batch = B;
    ap.heads = H;
    ap.tq = tx;
    ap.tk = ty;
    ap.key_len = a.len[y].data_ptr<int64_t>();
    ap.lse = saved[kLse + p].data_ptr();
    if (P.mode[p] == kGeneral) {
      ap.dk = ap.dv = hd;
      ap.q = seq(Y[x], tx, P.q_slot[p] * D, hd);
      ap.k = seq(Y[y], ty, P.k_slot[p] * D, hd);
      ap.v = seq(Y[y], ty, P.v_slot[p] * D, hd);
      ap.o = seq(saved[kO + x], tx, P.o_slot[p] * D, hd);
      ap.dout = seq(dO[x], tx, P.o_slot[p] * D, hd);
      ap.dq = seq(dY[x], tx, P.q_slot[p] * D, hd);
      ap.dk_out = seq(dY[y], ty, P.k_slot[p] * D, hd);
      ap.dv_out = seq(dY[y], ty, P.v_slot[p] * D, hd);
    } else {
      ap.dk = ap.dv = D;
      ap.q = seq(saved[kQt + p], tx, 0, D);
      ap.k = ap.v = seq(xf[y], ty, 0, 0);
      ap.o = seq(saved[kZ + p], tx, 0, D);
      ap.dout = seq(dz[p], tx, 0, D);
      ap.dq = seq(dqt[p], tx, 0, D);
      // dx_y accumulates in dsum_y (not read after step 3): dx_y += dK + dV.
      ap.dk_out = seq(gsum[y], ty, 0, 0);
      if (saved[kPsum + p].defined()) {
        ap.psum = saved[kPsum + p].data_ptr();
        ap.dpsum = dpsum[p].data_ptr();
      }
    }
    ap.scale = scale;
    problems.push_back(ap);
  }
  if (!problems.empty()) kern.attention_backward(dtype, problems, attn_drop);

  // 6. Absorbed pathways, after: dQ_h = dqt_h W_k,h^T, dW_k,h = Q_h^T dqt_h (dqt has the scale).
  stages.next("absorbed_queries");
  GemmBatch unfold(kern);
  for (int p = 0; p < kNumPathways; ++p) {
    if (P.mode[p] != kAbsorbed) continue;
    const int x = kQueryModality[p];
    for (int64_t h = 0; h < H; ++h) {
      const at::Tensor dqth = dqt[p].narrow(1, h * D, D);
      at::Tensor dq = dY[x].narrow(1, P.q_slot[p] * D + h * hd, hd);
      unfold.add(dq, dqth, a.in_w[p].narrow(0, D + h * hd, hd).t());
      at::Tensor gwk = g_in_w[p].narrow(0, D + h * hd, hd);
      unfold.add(gwk, Y[x].narrow(1, P.q_slot[p] * D + h * hd, hd).t(), dqth);
    }
  }
  unfold.run();

  // 7. Grouped input projections: dx_m = dsum_m (+ dy of absorbed pathways, added
  //    above) + sum_slots dY_m,s W_s, in place in dsum_m's buffer; weight
  //    gradients per slot, written straight into the parameters' gradients. The
  //    first GEMM batch has every weight gradient and the first slot's dx of each
  //    modality; batch s the (s+1)-th slot's dx (they accumulate into dx_m).
  stages.next("input_projections");
  std::array<at::Tensor, kNumModalities> dx;
  std::vector<GemmBatch> dx_slots;
  for (int m = 0; m < kNumModalities; ++m) {
    const auto slots = slots_of(P, m);
    while (dx_slots.size() < std::max<size_t>(slots.size(), 1)) dx_slots.emplace_back(kern);
    if (!slots.empty()) {
      const at::Tensor db = dY[m].sum(0);
      for (size_t s = 0; s < slots.size(); ++s) {
        const auto [p, part] = slots[s];
        const at::Tensor dys = dY[m].narrow(1, s * D, D);
        dx_slots[s].add(gsum[m], dys, in_rows(a, p, part, D), 1.0);
        at::Tensor gw = g_in_w[p].narrow(0, part * D, D);
        dx_slots[0].add(gw, dys.t(), xf[m]);
        g_in_b[p].narrow(0, part * D, D).copy_(db.narrow(0, s * D, D));
      }
    }
    dx[m] = gsum[m].view({B, P.t[m], D});
  }
  for (auto& batch : dx_slots) batch.run();
  // Parts of in_proj no path reads get zero gradients: Q and K of key-length-1
  // pathways (K bias of absorbed pathways is zeroed above).
  for (int p = 0; p < kNumPathways; ++p) {
    if (P.mode[p] == kKeyLen1) {
      g_in_w[p].narrow(0, 0, 2 * D).zero_();
      g_in_b[p].narrow(0, 0, 2 * D).zero_();
    }
  }

  stages.end();
  std::vector<at::Tensor> out;
  out.reserve(kNumGrads);
  for (int m = 0; m < kNumModalities; ++m) out.push_back(dx[m]);
  for (auto* v : {&g_in_w, &g_in_b, &g_out_w, &g_out_b})
    for (auto& t : *v) out.push_back(t);
  out.push_back(g_ln_w.to(dtype));
  out.push_back(g_ln_b.to(dtype));
  return out;
}

}  // namespace maven_fast::cross_modal
