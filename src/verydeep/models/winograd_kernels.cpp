// Fused tile transforms of Winograd F(4x4, 3x3) for models/winograd_ext.py, and their adjoints.
//
// The torch-ops version (models/winograd.py) spends more time in its transforms (unfold, two
// dense 36x36 / 16x36 matmuls, permuting copies) than in the channel matmul they feed. Here each
// transform is one pass over memory with the sparse Lavin & Gray matrices written out, vectorised
// over channels (channels_last), so the batched channel matmul (torch.bmm, MKL) is what is left.
// Layouts, all contiguous:
//   x, y: NHWC (a channels_last NCHW tensor);  v: (36, tiles, C);  m: (36, tiles, K)
// with tile index t = (n * th + ty) * tw + tx and frequency f = a * 6 + b (a along rows).
// Tile (ty, tx) reads input rows 4ty-1 .. 4ty+4 and columns 4tx-1 .. 4tx+4 (zero outside: the
// padding of 1) and writes output rows 4ty .. 4ty+3 (cropped at H, W).
// torch/types.h + torch/python.h, not torch/extension.h (which adds torch/all.h: nn, optim, data):
// a fifth less compile time on a machine that builds the kernels for the first time
#include <torch/types.h>
#include <torch/python.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

namespace {

constexpr int64_t kBlock = 32;  // channels per pass: 36 x 32 floats of tile stay in L1

// The 1-D transforms on `n` channels at once (stride s between the 6 or 4 taps, rs out).
template <typename T>
inline void bt6(const T* d, int64_t s, T* r, int64_t rs, int64_t n) {  // r = B^T d
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) {
    const T d0 = d[c], d1 = d[s + c], d2 = d[2 * s + c], d3 = d[3 * s + c], d4 = d[4 * s + c], d5 = d[5 * s + c];
    r[c] = 4 * d0 - 5 * d2 + d4;
    r[rs + c] = -4 * d1 - 4 * d2 + d3 + d4;
    r[2 * rs + c] = 4 * d1 - 4 * d2 - d3 + d4;
    r[3 * rs + c] = -2 * d1 - d2 + 2 * d3 + d4;
    r[4 * rs + c] = 2 * d1 - d2 - 2 * d3 + d4;
    r[5 * rs + c] = 4 * d1 - 5 * d3 + d5;
  }
}

template <typename T>
inline void b6(const T* e, int64_t s, T* r, int64_t rs, int64_t n) {  // r = B e, bt6's adjoint
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) {
    const T e0 = e[c], e1 = e[s + c], e2 = e[2 * s + c], e3 = e[3 * s + c], e4 = e[4 * s + c], e5 = e[5 * s + c];
    r[c] = 4 * e0;
    r[rs + c] = -4 * e1 + 4 * e2 - 2 * e3 + 2 * e4 + 4 * e5;
    r[2 * rs + c] = -5 * e0 - 4 * e1 - 4 * e2 - e3 - e4;
    r[3 * rs + c] = e1 - e2 + 2 * e3 - 2 * e4 - 5 * e5;
    r[4 * rs + c] = e0 + e1 + e2 + e3 + e4;
    r[5 * rs + c] = e5;
  }
}

template <typename T>
inline void at4(const T* m, int64_t s, T* r, int64_t rs, int64_t n) {  // r = A^T m: 6 -> 4
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) {
    const T m0 = m[c], m1 = m[s + c], m2 = m[2 * s + c], m3 = m[3 * s + c], m4 = m[4 * s + c], m5 = m[5 * s + c];
    r[c] = m0 + m1 + m2 + m3 + m4;
    r[rs + c] = m1 - m2 + 2 * m3 - 2 * m4;
    r[2 * rs + c] = m1 + m2 + 4 * m3 + 4 * m4;
    r[3 * rs + c] = m1 - m2 + 8 * m3 - 8 * m4 + m5;
  }
}

template <typename T>
inline void a6(const T* g, int64_t s, T* r, int64_t rs, int64_t n) {  // r = A g: 4 -> 6, at4's adjoint
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) {
    const T g0 = g[c], g1 = g[s + c], g2 = g[2 * s + c], g3 = g[3 * s + c];
    r[c] = g0;
    r[rs + c] = g0 + g1 + g2 + g3;
    r[2 * rs + c] = g0 - g1 + g2 - g3;
    r[3 * rs + c] = g0 + 2 * g1 + 4 * g2 + 8 * g3;
    r[4 * rs + c] = g0 - 2 * g1 + 4 * g2 - 8 * g3;
    r[5 * rs + c] = g3;
  }
}

struct Geometry {
  int64_t n, c, h, w, th, tw;  // c: the channels of the NHWC side (C in, or K out)
  int64_t tiles() const { return n * th * tw; }
};

// Runs body(n, ty, tx, c0, cb) over every tile and channel block. The block loop is innermost,
// so each frequency's row of the (36, tiles, C) side is written (or read) whole, in order.
// Parallel over rows of tiles, which read overlapping input but write disjoint outputs.
template <typename F>
void for_tiles(const Geometry& g, F body) {
  at::parallel_for(0, g.n * g.th, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      for (int64_t tx = 0; tx < g.tw; ++tx)
        for (int64_t c0 = 0; c0 < g.c; c0 += kBlock) body(i / g.th, i % g.th, tx, c0, std::min(kBlock, g.c - c0));
  });
}

// The same, parallel over images, with start(n) first: the input adjoint adds overlapping tiles
// into one image, which one thread then owns.
template <typename F, typename S>
void for_tiles_by_image(const Geometry& g, F body, S start) {
  at::parallel_for(0, g.n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      start(n);
      for (int64_t ty = 0; ty < g.th; ++ty)
        for (int64_t tx = 0; tx < g.tw; ++tx)
          for (int64_t c0 = 0; c0 < g.c; c0 += kBlock) body(n, ty, tx, c0, std::min(kBlock, g.c - c0));
    }
  });
}

// v[f, t, c] = (B^T d B)[f] of each 6x6 input tile d
template <typename T>
void input_kernel(const T* x, T* v, const Geometry& g) {
  const int64_t fstride = g.tiles() * g.c;
  for_tiles(g, [&](int64_t n, int64_t ty, int64_t tx, int64_t c0, int64_t cb) {
    alignas(64) T d[36 * kBlock], t[36 * kBlock];
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 6; ++j) {
        const int64_t yy = 4 * ty - 1 + i, xx = 4 * tx - 1 + j;
        T* dst = d + (i * 6 + j) * kBlock;
        if (yy >= 0 && yy < g.h && xx >= 0 && xx < g.w)
          std::memcpy(dst, x + ((n * g.h + yy) * g.w + xx) * g.c + c0, cb * sizeof(T));
        else
          std::fill(dst, dst + cb, T(0));
      }
    for (int j = 0; j < 6; ++j) bt6(d + j * kBlock, 6 * kBlock, t + j * kBlock, 6 * kBlock, cb);  // over i
    for (int a = 0; a < 6; ++a) bt6(t + a * 6 * kBlock, kBlock, d + a * 6 * kBlock, kBlock, cb);  // over j
    T* out = v + ((n * g.th + ty) * g.tw + tx) * g.c + c0;
    for (int f = 0; f < 36; ++f) std::memcpy(out + f * fstride, d + f * kBlock, cb * sizeof(T));
  });
}

// dx = input_kernel's adjoint: each tile's B dv B^T, added back where the tile was read. Each
// image is zeroed by the thread that then fills it.
template <typename T>
void input_adjoint_kernel(const T* dv, T* dx, const Geometry& g) {
  const int64_t fstride = g.tiles() * g.c, image = g.h * g.w * g.c;
  auto zero = [&](int64_t n) { std::fill_n(dx + n * image, image, T(0)); };
  for_tiles_by_image(g, [&](int64_t n, int64_t ty, int64_t tx, int64_t c0, int64_t cb) {
    alignas(64) T e[36 * kBlock], t[36 * kBlock];
    const T* in = dv + ((n * g.th + ty) * g.tw + tx) * g.c + c0;
    for (int f = 0; f < 36; ++f) std::memcpy(e + f * kBlock, in + f * fstride, cb * sizeof(T));
    for (int b = 0; b < 6; ++b) b6(e + b * kBlock, 6 * kBlock, t + b * kBlock, 6 * kBlock, cb);  // over a
    for (int i = 0; i < 6; ++i) b6(t + i * 6 * kBlock, kBlock, e + i * 6 * kBlock, kBlock, cb);  // over b
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 6; ++j) {
        const int64_t yy = 4 * ty - 1 + i, xx = 4 * tx - 1 + j;
        if (yy < 0 || yy >= g.h || xx < 0 || xx >= g.w) continue;
        T* dst = dx + ((n * g.h + yy) * g.w + xx) * g.c + c0;
        const T* src = e + (i * 6 + j) * kBlock;
#pragma omp simd
        for (int64_t c = 0; c < cb; ++c) dst[c] += src[c];
      }
  }, zero);
}

// y[n, 4ty+p, 4tx+q, k] = (A^T m A)[p, q] + bias[k], cropped at h, w; then max(0, .) with relu
template <typename T>
void output_kernel(const T* m, const T* bias, T* y, const Geometry& g, bool relu) {
  const int64_t fstride = g.tiles() * g.c;
  for_tiles(g, [&](int64_t n, int64_t ty, int64_t tx, int64_t c0, int64_t cb) {
    alignas(64) T e[36 * kBlock], t[24 * kBlock], o[16 * kBlock];
    const T* in = m + ((n * g.th + ty) * g.tw + tx) * g.c + c0;
    for (int f = 0; f < 36; ++f) std::memcpy(e + f * kBlock, in + f * fstride, cb * sizeof(T));
    for (int b = 0; b < 6; ++b) at4(e + b * kBlock, 6 * kBlock, t + b * kBlock, 6 * kBlock, cb);  // t[p, b]
    for (int p = 0; p < 4; ++p) at4(t + p * 6 * kBlock, kBlock, o + p * 4 * kBlock, kBlock, cb);  // o[p, q]
    for (int p = 0; p < 4 && 4 * ty + p < g.h; ++p)
      for (int q = 0; q < 4 && 4 * tx + q < g.w; ++q) {
        T* dst = y + ((n * g.h + 4 * ty + p) * g.w + 4 * tx + q) * g.c + c0;
        const T* src = o + (p * 4 + q) * kBlock;
        const T* b = bias ? bias + c0 : nullptr;
        if (relu) {
#pragma omp simd
          for (int64_t c = 0; c < cb; ++c) dst[c] = std::max(src[c] + (b ? b[c] : T(0)), T(0));
        } else {
#pragma omp simd
          for (int64_t c = 0; c < cb; ++c) dst[c] = src[c] + (b ? b[c] : T(0));
        }
      }
  });
}

// dm = output_kernel's adjoint: A g A^T of each 4x4 gradient tile (zero beyond h, w); with the
// forward's ReLU output y, the gradient is first zeroed where y is not positive
template <typename T>
void output_adjoint_kernel(const T* dy, const T* y, T* dm, const Geometry& g) {
  const int64_t fstride = g.tiles() * g.c;
  for_tiles(g, [&](int64_t n, int64_t ty, int64_t tx, int64_t c0, int64_t cb) {
    alignas(64) T e[16 * kBlock], t[24 * kBlock], o[36 * kBlock];
    for (int p = 0; p < 4; ++p)
      for (int q = 0; q < 4; ++q) {
        const int64_t yy = 4 * ty + p, xx = 4 * tx + q;
        T* dst = e + (p * 4 + q) * kBlock;
        if (yy >= g.h || xx >= g.w) {
          std::fill(dst, dst + cb, T(0));
          continue;
        }
        const int64_t at = ((n * g.h + yy) * g.w + xx) * g.c + c0;
        if (y) {
#pragma omp simd
          for (int64_t c = 0; c < cb; ++c) dst[c] = y[at + c] > T(0) ? dy[at + c] : T(0);
        } else {
          std::memcpy(dst, dy + at, cb * sizeof(T));
        }
      }
    for (int q = 0; q < 4; ++q) a6(e + q * kBlock, 4 * kBlock, t + q * kBlock, 4 * kBlock, cb);  // t[a, q]
    for (int a = 0; a < 6; ++a) a6(t + a * 4 * kBlock, kBlock, o + a * 6 * kBlock, kBlock, cb);  // o[a, b]
    T* out = dm + ((n * g.th + ty) * g.tw + tx) * g.c + c0;
    for (int f = 0; f < 36; ++f) std::memcpy(out + f * fstride, o + f * kBlock, cb * sizeof(T));
  });
}

int64_t tiles(int64_t side) { return (side + 3) / 4; }

void check_nhwc(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.dim() == 4, name, " must be a 4-D CPU tensor");
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), name, " must be channels_last");
}

void check_tiles(const torch::Tensor& t, const Geometry& g, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), name, " must be a contiguous CPU tensor");
  TORCH_CHECK(t.dim() == 3 && t.size(0) == 36 && t.size(1) == g.tiles() && t.size(2) == g.c, name,
              " must be (36, tiles, channels) for this geometry");
}

Geometry nhwc_geometry(const torch::Tensor& t) {
  return {t.size(0), t.size(1), t.size(2), t.size(3), tiles(t.size(2)), tiles(t.size(3))};
}

torch::Tensor nchw_empty(const Geometry& g, const torch::Tensor& like) {
  return torch::empty({g.n, g.c, g.h, g.w}, like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

}  // namespace

torch::Tensor input_transform(torch::Tensor x) {
  check_nhwc(x, "x");
  const Geometry g = nhwc_geometry(x);
  auto v = torch::empty({36, g.tiles(), g.c}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "input_transform",
                             [&] { input_kernel<scalar_t>(x.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), g); });
  return v;
}

torch::Tensor input_adjoint(torch::Tensor dv, int64_t n, int64_t h, int64_t w) {
  const Geometry g{n, dv.size(-1), h, w, tiles(h), tiles(w)};
  check_tiles(dv, g, "dv");
  auto dx = nchw_empty(g, dv);
  AT_DISPATCH_FLOATING_TYPES(dv.scalar_type(), "input_adjoint", [&] {
    input_adjoint_kernel<scalar_t>(dv.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), g);
  });
  return dx;
}

torch::Tensor output_transform(torch::Tensor m, c10::optional<torch::Tensor> bias, int64_t n, int64_t h, int64_t w,
                               bool relu) {
  const Geometry g{n, m.size(-1), h, w, tiles(h), tiles(w)};
  check_tiles(m, g, "m");
  if (bias) {
    TORCH_CHECK(bias->is_contiguous() && bias->numel() == g.c && bias->scalar_type() == m.scalar_type(),
                "bias must be a contiguous (K,) tensor of m's dtype");
  }
  auto y = nchw_empty(g, m);
  AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "output_transform", [&] {
    output_kernel<scalar_t>(m.data_ptr<scalar_t>(), bias ? bias->data_ptr<scalar_t>() : nullptr,
                            y.data_ptr<scalar_t>(), g, relu);
  });
  return y;
}

torch::Tensor output_adjoint(torch::Tensor dy, c10::optional<torch::Tensor> y) {
  check_nhwc(dy, "dy");
  const Geometry g = nhwc_geometry(dy);
  if (y) {
    check_nhwc(*y, "y");
    TORCH_CHECK(y->sizes() == dy.sizes() && y->scalar_type() == dy.scalar_type(), "y does not match dy");
  }
  auto dm = torch::empty({36, g.tiles(), g.c}, dy.options());
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "output_adjoint", [&] {
    output_adjoint_kernel<scalar_t>(dy.data_ptr<scalar_t>(), y ? y->data_ptr<scalar_t>() : nullptr,
                                    dm.data_ptr<scalar_t>(), g);
  });
  return dm;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("input_transform", &input_transform, "x (N, C, H, W) channels_last -> v (36, tiles, C)");
  mod.def("input_adjoint", &input_adjoint, "dv (36, tiles, C), n, h, w -> dx (N, C, H, W) channels_last");
  mod.def("output_transform", &output_transform, "m (36, tiles, K), bias, n, h, w, relu -> y channels_last");
  mod.def("output_adjoint", &output_adjoint, "dy channels_last, the ReLU's output y or None -> dm (36, tiles, K)");
}
