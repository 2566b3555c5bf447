// Runs kernels/codebook_update.cuh on the host, one request after another, exactly as a block of
// kernels/codebook_update.cu composes it but with one thread: the CUDA kernel's logic checked
// where no GPU exists. Built and loaded by tests/ops/test_codebook.py (ctypes).
#include "codebook_update.cuh"

using namespace z2z_kernels;

extern "C" void codebook_update_host(int32_t* entries, int32_t* known_at, int32_t* num_entries,
                                     int32_t* buffer, int32_t* buffer_len, const bool* disabled,
                                     int32_t V, int32_t C, int32_t M, const int32_t* ids,
                                     const int32_t* slots, const int32_t* positions,
                                     int32_t* expansion, int32_t* created, int32_t* candidate,
                                     int32_t batch_size) {
  const Codebook cb{entries, known_at, num_entries, buffer, buffer_len, disabled, V, C, M};
  const Batch batch{ids, slots, positions, expansion, created, candidate};
  for (int b = 0; b < batch_size; ++b) {
    Step step;
    plan(cb, batch, b, step);
    const int32_t* book = slot_entries(cb, step.slot);
    resolve(step, known_rows(book, 0, step.n_scan, 1, step.cands, step.K, M), C, M);
    commit(cb, batch, b, step, known_rows(book, 0, step.n_scan, 1, &step.next, step.may_next ? 1 : 0, M) != 0);
  }
}
