// RWKV-7's WKV delta-rule recurrence for training: the forward over a chunk of one (sequence,
// head), keeping what the backward needs, and its backward. Vectorised over the head's N
// channels and compiled for AVX-512, AVX2 and baseline x86-64, picked at run time.
#pragma once

#include <cstdint>

namespace rwkv::train {

// One (sequence, head): pointers to the N values of the chunk's first token, the tokens
// `stride` floats apart (the row length of the activations).
struct Wkv7Head {
  const float *r, *w, *k, *v, *kk, *a;
  int64_t stride;
};

// Tokens per segment: the forward keeps the state at the start of every segment, the backward
// recomputes a segment's states from it (a small, cache-resident buffer instead of a state per
// token in memory).
constexpr int64_t kWkv7Segment = 16;

// Floats wkv7_fwd saves for T tokens.
constexpr int64_t wkv7_saved_size(int64_t T, int64_t N) {
  return (T + kWkv7Segment - 1) / kWkv7Segment * N * N;
}

// With S (N x N, row i = value channel, column j = key channel) and for each token:
//   sa = S (-kk), S <- S diag(w) + sa (kk * a)^T + v k^T, y = S r.
// `state` is the start state on entry and the end state on exit; the states at the segments'
// starts go to `saved` (wkv7_saved_size floats), y and sa (N values each) to rows `stride` apart.
void wkv7_fwd(const Wkv7Head& in, int64_t T, int64_t N, float* state, float* saved, float* y,
              float* sa);

// Back-propagates wkv7_fwd from what it saved and the gradient dy. dS holds the gradient of the
// end state on entry and of the start state on exit. dr, dk, dv accumulate; dw, dkk, da are
// set. All gradient rows `stride` apart.
void wkv7_bwd(const Wkv7Head& in, int64_t T, int64_t N, const float* saved, const float* sa,
              const float* dy, float* dS, float* dr, float* dw, float* dk, float* dv, float* dkk,
              float* da);

}  // namespace rwkv::train
