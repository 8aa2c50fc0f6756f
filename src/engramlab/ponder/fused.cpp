// Fused element-wise parts of the recurrent steps in engramlab/ponder/steps.py, forward and backward.
//
// Built at first use by engramlab/ponder/fused.py (torch.utils.cpp_extension, -O3 -march=native).
// The matrix products stay in PyTorch (MKL), so autograd computes their gradients; these kernels
// replace the dozen small element-wise operators a GRU step costs in eager PyTorch (each a pass over
// memory plus dispatcher overhead) by one pass forward and one pass backward.
// tests/test_fused.py checks every kernel against the readable PyTorch code in steps.py.

// Use the widest vector instructions this compiler targets (-march=native): ATen's Vectorized<float>
// picks its implementation from these macros (without them: a portable scalar version).
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define CPU_CAPABILITY_AVX512
#elif defined(__AVX2__) && defined(__FMA__)
#define CPU_CAPABILITY_AVX2
#endif

#include <ATen/cpu/vec/vec.h>
#include <torch/extension.h>

using Vec = at::vec::Vectorized<float>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// σ(x) = 1 / (1 + e^(−x)), with ATen's vectorised e^x (within 2 ulp, no libm call)
static inline Vec sigmoid(Vec x) { return Vec(1.0f) / (Vec(1.0f) + x.neg().exp_u20()); }

// tanh(x) = 2σ(2x) − 1. Near 0 that difference cancels, so for |x| < 0.1 the Taylor series
// x − x³/3 + 2x⁵/15 − 17x⁷/315 is used (its next term, 62x⁹/2835, is below 2e-11 there).
// Relative error below 2e-6 everywhere; at.tanh is 3-6x slower on the machines we measured.
static inline Vec tanh(Vec x) {
  Vec x2 = x * x;
  Vec series = x * (Vec(1.0f) + x2 * (Vec(-1.0f / 3) + x2 * (Vec(2.0f / 15) + x2 * Vec(-17.0f / 315))));
  Vec logistic = Vec(2.0f) * sigmoid(x + x) - Vec(1.0f);
  return Vec::blendv(logistic, series, x.abs() < Vec(0.1f));
}

// f(row, column, count) over a (rows, width) block, one vector of columns at a time
template <typename F>
static inline void for_each_vector(int64_t rows, int64_t width, F f) {
  for (int64_t b = 0; b < rows; ++b) {
    int64_t j = 0;
    for (; j + Vec::size() <= width; j += Vec::size()) f(b, j, Vec::size());
    if (j < width) f(b, j, width - j);
  }
}

static void check_float(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat, name, " must be a float32 CPU tensor");
}

// The GRU cell of GRUStep (torch.nn.GRUCell's equations), given both projections:
//   xg = W_x x + b_x and gh = W_h h + b_h, each (B, 3H) in the order [r, z, n]:
//   r = σ(xg_r + gh_r),  z = σ(xg_z + gh_z),  c = tanh(xg_n + r ⊙ gh_n),  h' = (1 − z) ⊙ c + z ⊙ h
// Keeps r, z and c for the backward pass.
static void gru_forward(int64_t B, int64_t H, const float* xg, const float* gh, const float* h, float* out, float* r,
                        float* z, float* c) {
  for_each_vector(B, H, [&](int64_t b, int64_t j, int64_t n) {
    const float *x = xg + b * 3 * H + j, *g = gh + b * 3 * H + j;
    const int64_t o = b * H + j;
    Vec vr = sigmoid(Vec::loadu(x, n) + Vec::loadu(g, n));
    Vec vz = sigmoid(Vec::loadu(x + H, n) + Vec::loadu(g + H, n));
    Vec vc = tanh(Vec::loadu(x + 2 * H, n) + vr * Vec::loadu(g + 2 * H, n));
    Vec vh = Vec::loadu(h + o, n);
    (vc + vz * (vh - vc)).store(out + o, n);
    vr.store(r + o, n), vz.store(z + o, n), vc.store(c + o, n);
  });
}

// With d = ∂L/∂h':  ∂h = d ⊙ z,  ∂z = d ⊙ (h − c),  ∂c = d ⊙ (1 − z),  and through the non-linearities
//   ∂a_n = ∂c ⊙ (1 − c²),  ∂a_z = ∂z ⊙ z(1 − z),  ∂a_r = ∂a_n ⊙ gh_n ⊙ r(1 − r);
//   ∂xg = [∂a_r, ∂a_z, ∂a_n] (added to d_xg when accumulate),  ∂gh = [∂a_r, ∂a_z, ∂a_n ⊙ r]
static void gru_backward(int64_t B, int64_t H, const float* d_out, const float* gh, const float* h, const float* r,
                         const float* z, const float* c, float* d_xg, bool accumulate, float* d_gh, float* d_h) {
  const Vec one(1.0f);
  for_each_vector(B, H, [&](int64_t b, int64_t j, int64_t n) {
    const int64_t o = b * H + j, w = b * 3 * H + j;
    Vec d = Vec::loadu(d_out + o, n), vr = Vec::loadu(r + o, n), vz = Vec::loadu(z + o, n);
    Vec vc = Vec::loadu(c + o, n), vh = Vec::loadu(h + o, n), gn = Vec::loadu(gh + w + 2 * H, n);
    Vec a_z = d * (vh - vc) * vz * (one - vz);
    Vec a_n = d * (one - vz) * (one - vc * vc);
    Vec a_r = a_n * gn * vr * (one - vr);
    a_r.store(d_gh + w, n), a_z.store(d_gh + w + H, n), (a_n * vr).store(d_gh + w + 2 * H, n);
    if (accumulate) {
      a_r = a_r + Vec::loadu(d_xg + w, n);
      a_z = a_z + Vec::loadu(d_xg + w + H, n);
      a_n = a_n + Vec::loadu(d_xg + w + 2 * H, n);
    }
    a_r.store(d_xg + w, n), a_z.store(d_xg + w + H, n), a_n.store(d_xg + w + 2 * H, n);
    (d * vz).store(d_h + o, n);
  });
}

static float* ptr(torch::Tensor& t) { return t.data_ptr<float>(); }

// One GRU step (the path that drops halted samples between steps).
struct GRUCell : public torch::autograd::Function<GRUCell> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor xg, torch::Tensor gh, torch::Tensor h) {
    check_float(xg, "xg"), check_float(gh, "gh"), check_float(h, "h");
    xg = xg.contiguous(), gh = gh.contiguous(), h = h.contiguous();
    const int64_t B = h.size(0), H = h.size(1);
    TORCH_CHECK(xg.sizes() == gh.sizes() && xg.size(0) == B && xg.size(1) == 3 * H, "gru_cell: shapes do not match");
    auto out = torch::empty_like(h), r = torch::empty_like(h), z = torch::empty_like(h), c = torch::empty_like(h);
    gru_forward(B, H, ptr(xg), ptr(gh), ptr(h), ptr(out), ptr(r), ptr(z), ptr(c));
    ctx->save_for_backward({gh, h, r, z, c});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    auto gh = s[0], h = s[1], r = s[2], z = s[3], c = s[4];
    auto d_out = grads[0].contiguous();
    auto d_gh = torch::empty_like(gh), d_xg = torch::empty_like(gh), d_h = torch::empty_like(h);
    gru_backward(h.size(0), h.size(1), ptr(d_out), ptr(gh), ptr(h), ptr(r), ptr(z), ptr(c), ptr(d_xg), false,
                 ptr(d_gh), ptr(d_h));
    return {d_xg, d_gh, d_h};
  }
};

// The states before each step, h₀ … h_{steps−1} (steps, B, H), of a run whose outputs are `states`.
static torch::Tensor previous_states(const torch::Tensor& h0, const torch::Tensor& states) {
  return torch::cat({h0.unsqueeze(0), states.slice(0, 0, states.size(0) - 1)});
}

// `steps` GRU steps with the same input from h₀ (an empty tensor: h₀ = 0), every sample to the end:
// the states h₁ … h_steps (steps, B, H). The recurrent products run in MKL through ATen; the weight
// gradient is one product over all steps, Σₜ ∂ghₜᵀ hₜ₋₁.
struct GRUUnroll : public torch::autograd::Function<GRUUnroll> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor xg, torch::Tensor h0, torch::Tensor weight,
                               torch::Tensor bias, int64_t steps) {
    check_float(xg, "xg"), check_float(weight, "weight"), check_float(bias, "bias");
    xg = xg.contiguous();
    const int64_t B = xg.size(0), H = weight.size(1);
    TORCH_CHECK(weight.size(0) == 3 * H && xg.size(1) == 3 * H && steps >= 1, "gru_unroll: shapes do not match");
    const bool from_zero = h0.numel() == 0;
    h0 = from_zero ? torch::zeros({B, H}, xg.options()) : h0.contiguous();
    auto states = torch::empty({steps, B, H}, xg.options()), gates = torch::empty({steps, B, 3 * H}, xg.options());
    auto r = torch::empty_like(states), z = torch::empty_like(states), c = torch::empty_like(states);
    auto weight_t = weight.t();
    for (int64_t t = 0; t < steps; ++t) {
      auto h = t == 0 ? h0 : states[t - 1];
      auto gh = gates[t];
      if (t == 0 && from_zero)
        gh.copy_(bias.expand({B, 3 * H}));  // W_h h₀ = 0
      else
        at::addmm_out(gh, bias, h, weight_t);
      auto out = states[t], rt = r[t], zt = z[t], ct = c[t];
      gru_forward(B, H, ptr(xg), ptr(gh), ptr(h), ptr(out), ptr(rt), ptr(zt), ptr(ct));
    }
    ctx->save_for_backward({weight, h0, states, gates, r, z, c});
    ctx->saved_data["from_zero"] = from_zero;
    return states;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    auto weight = s[0], h0 = s[1], states = s[2], gates = s[3], r = s[4], z = s[5], c = s[6];
    const bool from_zero = ctx->saved_data["from_zero"].toBool();
    const int64_t steps = states.size(0), B = states.size(1), H = states.size(2);
    auto d_states = grads[0].contiguous();
    auto d_xg = torch::empty({B, 3 * H}, states.options()), d_gates = torch::empty_like(gates);
    auto d_h = torch::empty({B, H}, states.options()), carry = torch::zeros({B, H}, states.options());
    auto d = torch::empty({B, H}, states.options());
    for (int64_t t = steps - 1; t >= 0; --t) {
      at::add_out(d, d_states[t], carry);  // ∂L/∂hₜ: from the heads at step t and from step t + 1
      auto h = t == 0 ? h0 : states[t - 1];
      auto gt = gates[t], rt = r[t], zt = z[t], ct = c[t], dgt = d_gates[t];
      gru_backward(B, H, ptr(d), ptr(gt), ptr(h), ptr(rt), ptr(zt), ptr(ct), ptr(d_xg), t < steps - 1, ptr(dgt),
                   ptr(d_h));
      if (t > 0 || !from_zero) at::addmm_out(carry, d_h, dgt, weight);  // ∂hₜ₋₁ = d ⊙ z + ∂ghₜ W_h
    }
    // ∂W_h = Σₜ ∂ghₜᵀ hₜ₋₁ (a zero h₀ adds nothing)
    torch::Tensor d_weight;
    if (!from_zero)
      d_weight = d_gates.reshape({-1, 3 * H}).t().mm(previous_states(h0, states).reshape({-1, H}));
    else if (steps > 1)
      d_weight = d_gates.slice(0, 1).reshape({-1, 3 * H}).t().mm(states.slice(0, 0, steps - 1).reshape({-1, H}));
    else
      d_weight = torch::zeros_like(weight);
    auto d_h0 = from_zero ? torch::Tensor() : carry;
    return {d_xg, d_h0, d_weight, d_gates.sum({0, 1}), torch::Tensor()};
  }
};

// tanh, for the tanh RNN of RNNStep; backward: ∂a = d ⊙ (1 − tanh(a)²)
static void tanh_inplace(int64_t numel, float* a) {
  for_each_vector(1, numel, [&](int64_t, int64_t j, int64_t n) { tanh(Vec::loadu(a + j, n)).store(a + j, n); });
}

struct Tanh : public torch::autograd::Function<Tanh> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor a) {
    check_float(a, "a");
    auto out = a.contiguous().clone();
    tanh_inplace(out.numel(), ptr(out));
    ctx->save_for_backward({out});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {at::tanh_backward(grads[0], ctx->get_saved_variables()[0])};
  }
};

// `steps` tanh-RNN steps hₜ = tanh(x + U hₜ₋₁) from h₀ (an empty tensor: h₀ = 0), x = W x + b computed
// once: the states (steps, B, H). Backward: ∂aₜ = (∂L/∂hₜ) ⊙ (1 − hₜ²),  ∂x = Σₜ ∂aₜ,
// ∂U = Σₜ ∂aₜᵀ hₜ₋₁,  ∂hₜ₋₁ += ∂aₜ U.
struct RNNUnroll : public torch::autograd::Function<RNNUnroll> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor h0, torch::Tensor weight,
                               int64_t steps) {
    check_float(x, "x"), check_float(weight, "weight");
    x = x.contiguous();
    const int64_t B = x.size(0), H = weight.size(1);
    TORCH_CHECK(weight.size(0) == H && x.size(1) == H && steps >= 1, "rnn_unroll: shapes do not match");
    const bool from_zero = h0.numel() == 0;
    h0 = from_zero ? torch::zeros({B, H}, x.options()) : h0.contiguous();
    auto states = torch::empty({steps, B, H}, x.options());
    auto weight_t = weight.t();
    for (int64_t t = 0; t < steps; ++t) {
      auto out = states[t];
      if (t == 0 && from_zero)
        out.copy_(x);  // U h₀ = 0
      else
        at::addmm_out(out, x, t == 0 ? h0 : states[t - 1], weight_t);
      tanh_inplace(B * H, ptr(out));
    }
    ctx->save_for_backward({weight, h0, states});
    ctx->saved_data["from_zero"] = from_zero;
    return states;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    auto weight = s[0], h0 = s[1], states = s[2];
    const bool from_zero = ctx->saved_data["from_zero"].toBool();
    const int64_t steps = states.size(0), B = states.size(1), H = states.size(2);
    auto d_states = grads[0].contiguous();
    auto d_pre = torch::empty_like(states), carry = torch::zeros({B, H}, states.options());
    auto d = torch::empty({B, H}, states.options());
    for (int64_t t = steps - 1; t >= 0; --t) {
      at::add_out(d, d_states[t], carry);
      auto dp = d_pre[t];
      at::tanh_backward_out(dp, d, states[t]);
      if (t > 0 || !from_zero) at::mm_out(carry, dp, weight);
    }
    torch::Tensor d_weight;
    if (!from_zero)
      d_weight = d_pre.reshape({-1, H}).t().mm(previous_states(h0, states).reshape({-1, H}));
    else if (steps > 1)
      d_weight = d_pre.slice(0, 1).reshape({-1, H}).t().mm(states.slice(0, 0, steps - 1).reshape({-1, H}));
    else
      d_weight = torch::zeros_like(weight);
    auto d_h0 = from_zero ? torch::Tensor() : carry;
    return {d_pre.sum(0), d_h0, d_weight, torch::Tensor()};
  }
};

torch::Tensor gru_cell(torch::Tensor xg, torch::Tensor gh, torch::Tensor h) { return GRUCell::apply(xg, gh, h); }
torch::Tensor fused_tanh(torch::Tensor a) { return Tanh::apply(a); }
torch::Tensor gru_unroll(torch::Tensor xg, torch::Tensor h0, torch::Tensor weight, torch::Tensor bias, int64_t steps) {
  return GRUUnroll::apply(xg, h0, weight, bias, steps);
}
torch::Tensor rnn_unroll(torch::Tensor x, torch::Tensor h0, torch::Tensor weight, int64_t steps) {
  return RNNUnroll::apply(x, h0, weight, steps);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gru_cell", &gru_cell, "GRU cell from both projections xg, gh (B, 3H) and the state h (B, H)");
  m.def("tanh", &fused_tanh, "tanh with a fused backward");
  m.def("gru_unroll", &gru_unroll, "states (steps, B, H) of a GRU from h0 (empty: zeros) with input projection xg (B, 3H)");
  m.def("rnn_unroll", &rnn_unroll, "states (steps, B, H) of a tanh RNN from h0 (empty: zeros) with input projection x (B, H)");
}
