// Batched LZW codebook update for decode steps: one thread block per request.
//
// Thread 0 does the per-request logic (codebook_update.cuh); the duplicate checks, the only part
// that grows with the codebook (C entries of M ids per slot), are spread over the block: thread i
// compares entries i, i + blockDim, ... against every candidate at once and ORs its bits into
// shared memory. Plain CUDA, no torch: codebook_update_binding.cpp is the torch face.
#include <cuda_runtime.h>

#include "codebook_update.cuh"

namespace z2z_kernels {

constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads) codebook_update_kernel(Codebook cb, Batch batch) {
  __shared__ Step step;
  __shared__ uint32_t known;
  const int b = blockIdx.x;
  if (threadIdx.x == 0) {
    plan(cb, batch, b, step);
    known = 0;
  }
  __syncthreads();
  const int32_t* book = slot_entries(cb, step.slot);
  uint32_t bits = known_rows(book, threadIdx.x, step.n_scan, blockDim.x, step.cands, step.K, cb.M);
  if (bits) atomicOr(&known, bits);
  __syncthreads();
  if (threadIdx.x == 0) {
    resolve(step, known, cb.C, cb.M);
    known = 0;
  }
  __syncthreads();
  bits = known_rows(book, threadIdx.x, step.n_scan, blockDim.x, &step.next, step.may_next ? 1 : 0, cb.M);
  if (bits) atomicOr(&known, bits);
  __syncthreads();
  if (threadIdx.x == 0) commit(cb, batch, b, step, known != 0);
}

// Launches on `stream`; returns the launch error (cudaSuccess when none).
cudaError_t launch_codebook_update(const Codebook& cb, const Batch& batch, int batch_size,
                                   cudaStream_t stream) {
  if (batch_size == 0) return cudaSuccess;
  codebook_update_kernel<<<batch_size, kThreads, 0, stream>>>(cb, batch);
  return cudaGetLastError();
}

}  // namespace z2z_kernels
