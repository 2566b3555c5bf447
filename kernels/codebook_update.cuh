// One request's step of the batched LZW codebook update, as plain functions that a CUDA block
// (codebook_update.cu) or a host loop (tests/ops/codebook_update_host.cpp) composes:
//
//   plan        thread 0: read the slot, expand the id, form the creation candidates
//   known_rows  every thread: which candidates equal one of the entries it scans
//   resolve     thread 0: first new candidate, new buffer, the next KwKwK candidate
//   known_rows  every thread: is that next candidate an entry already
//   commit      thread 0: write the slot and the outputs
//
// Semantics (and the state layout) are those of z2z_vllm/ops/codebook.py, whose module docstring
// walks through the algorithm; z2z_vllm/codec/reference.py is the LZW decoder it reproduces.
// No CUDA-only constructs here, so that the host can run exactly this code.
#pragma once

#include <cstdint>

#if !defined(__CUDACC__) && !defined(__host__)  // a plain C++ compiler without CUDA's headers
#define __host__
#define __device__
#endif

namespace z2z_kernels {

constexpr int kMaxSubtokens = 16;  // M limit: candidate bits fit a uint32, rows fit registers

// Decoder state of S slots (CodebookState), int32 ids padded with -1.
struct Codebook {
  int32_t* entries;      // [S, C, M]
  int32_t* known_at;     // [S, C]
  int32_t* num_entries;  // [S]
  int32_t* buffer;       // [S, M]
  int32_t* buffer_len;   // [S]
  const bool* disabled;  // [V]
  int32_t V, C, M;
};

// One id per request and what the step reports back.
struct Batch {
  const int32_t* ids;        // [B]
  const int32_t* slots;      // [B], < 0: padding row
  const int32_t* positions;  // [B]
  int32_t* expansion;        // [B, M]
  int32_t* created;          // [B]
  int32_t* candidate;        // [B, M]
};

using Row = int32_t[kMaxSubtokens];

struct Step {
  // plan
  int64_t slot;  // clamped to >= 0; `active` says whether it is real
  bool active, disabled, normal, kwkwk, extends;
  int32_t n, n_scan, L, D, K;
  Row buf, dec;                // the buffer and the id's expansion (KwKwK: the buffer's first id)
  Row cands[kMaxSubtokens];    // (buffer ++ expansion)[:L+k+1], k < K
  // resolve
  bool creates, kw_ok, valid, may_next;
  int32_t first_new, length;
  Row new_entry, new_buf, next;
};

__host__ __device__ inline const int32_t* slot_entries(const Codebook& cb, int64_t slot) {
  return cb.entries + slot * cb.C * cb.M;
}

// (buffer ++ expansion)[j], -1 past its end.
__host__ __device__ inline int32_t joined(const Step& s, int32_t j, int32_t M) {
  if (j < s.L) return s.buf[j];
  return j - s.L < M ? s.dec[j - s.L] : -1;
}

__host__ __device__ inline void plan(const Codebook& cb, const Batch& batch, int b, Step& s) {
  const int32_t M = cb.M, V = cb.V;
  const int32_t slot = batch.slots[b], t = batch.ids[b];
  s.active = slot >= 0;
  s.slot = s.active ? slot : 0;
  s.n = cb.num_entries[s.slot];
  s.n_scan = s.active ? s.n : 0;  // padding rows scan nothing
  s.L = cb.buffer_len[s.slot];
  for (int32_t m = 0; m < M; ++m) s.buf[m] = m < s.L ? cb.buffer[s.slot * M + m] : -1;

  const bool is_base = t >= 0 && t < V;
  const bool is_entry = t >= V && t - V < s.n;
  s.disabled = is_base && cb.disabled[t];
  s.kwkwk = t >= V && t - V == s.n && s.n < cb.C;
  s.normal = (is_base && !s.disabled) || is_entry;
  const int32_t* entry = slot_entries(cb, s.slot) + static_cast<int64_t>(is_entry ? t - V : 0) * M;
  for (int32_t m = 0; m < M; ++m) s.dec[m] = is_entry ? entry[m] : -1;
  if (is_base) s.dec[0] = t;
  if (s.kwkwk) s.dec[0] = s.buf[0];
  s.D = 0;
  for (int32_t m = 0; m < M; ++m) s.D += s.dec[m] >= 0;

  s.extends = (s.normal || s.kwkwk) && s.L > 0 && s.L < M && s.n < cb.C;
  s.K = s.extends ? (s.D < M - s.L ? s.D : M - s.L) : 0;
  for (int32_t k = 0; k < s.K; ++k)
    for (int32_t m = 0; m < M; ++m) s.cands[k][m] = m <= s.L + k ? joined(s, m, M) : -1;
}

// Bit k set when rows[k] equals one of the entries first, first + stride, ... < end.
__host__ __device__ inline uint32_t known_rows(const int32_t* book, int32_t first, int32_t end,
                                               int32_t stride, const Row* rows, int32_t num_rows,
                                               int32_t M) {
  uint32_t bits = 0;
  if (num_rows == 0) return bits;
  for (int32_t e = first; e < end; e += stride) {
    Row entry;  // constant indices after unrolling: stays in registers
#pragma unroll
    for (int32_t m = 0; m < kMaxSubtokens; ++m) entry[m] = m < M ? book[static_cast<int64_t>(e) * M + m] : -1;
    for (int32_t k = 0; k < num_rows; ++k) {
      bool same = true;
#pragma unroll
      for (int32_t m = 0; m < kMaxSubtokens; ++m) same &= m >= M || entry[m] == rows[k][m];
      bits |= static_cast<uint32_t>(same) << k;
    }
  }
  return bits;
}

__host__ __device__ inline void resolve(Step& s, uint32_t known, int32_t C, int32_t M) {
  s.first_new = kMaxSubtokens;
  for (int32_t k = s.K - 1; k >= 0; --k)
    if (!((known >> k) & 1u)) s.first_new = k;
  s.kw_ok = s.kwkwk && s.extends && s.first_new == 0;
  s.creates = s.active && ((s.normal && s.extends && s.first_new < s.K) || s.kw_ok);
  s.valid = s.active && (s.disabled || s.normal || s.kw_ok);
  for (int32_t m = 0; m < M; ++m) s.new_entry[m] = s.creates ? s.cands[s.first_new][m] : -1;

  // The new buffer is (buffer ++ expansion)[start : start + length]; an invalid id keeps it.
  int32_t start = 0, length = s.L;
  if (s.normal) {
    if (s.n == C) {
      length = 0;  // a full codebook freezes: nothing merges any more
    } else if (s.L == 0 || s.L == M) {
      start = s.L, length = s.D;
    } else if (s.creates) {
      start = s.L + s.first_new, length = s.D - s.first_new;
    } else if (s.L + s.D >= M) {
      start = M, length = s.L + s.D - M;
    } else {
      length = s.L + s.D;
    }
  } else if (s.kw_ok) {
    length = s.L + 1;
  } else if (s.disabled) {
    length = 0;
  }
  s.length = length;
  for (int32_t m = 0; m < M; ++m) s.new_buf[m] = m < length ? joined(s, start + m, M) : -1;
  for (int32_t m = 0; m < M; ++m) s.next[m] = m < length ? s.new_buf[m] : (m == length ? s.new_buf[0] : -1);
  s.may_next = s.active && length > 0 && length < M && s.n + s.creates < C;
}

__host__ __device__ inline void commit(const Codebook& cb, const Batch& batch, int b, const Step& s,
                                       bool next_known) {
  const int32_t M = cb.M;
  bool next_is_new_entry = s.creates;
  for (int32_t m = 0; m < M; ++m) next_is_new_entry &= s.next[m] == s.new_entry[m];
  const bool has_next = s.may_next && !next_known && !next_is_new_entry;
  if (s.creates) {
    int32_t* entry = cb.entries + (s.slot * cb.C + s.n) * M;
    for (int32_t m = 0; m < M; ++m) entry[m] = s.new_entry[m];
    cb.known_at[s.slot * cb.C + s.n] = batch.positions[b];
  }
  if (s.active) {
    cb.num_entries[s.slot] = s.n + s.creates;
    for (int32_t m = 0; m < M; ++m) cb.buffer[s.slot * M + m] = s.new_buf[m];
    cb.buffer_len[s.slot] = s.length;
  }
  for (int32_t m = 0; m < M; ++m) {
    batch.expansion[b * M + m] = s.valid ? (s.kw_ok ? s.new_entry[m] : s.dec[m]) : -1;
    batch.candidate[b * M + m] = has_next ? s.next[m] : -1;
  }
  batch.created[b] = s.creates ? s.n : -1;
}

}  // namespace z2z_kernels
