// torch face of codebook_update.cu: z2z_vllm._cuda_ops.codebook_update(...), called by
// z2z_vllm.ops.codebook_update(backend="cuda"). Checks the tensors, launches on torch's current
// stream, returns without synchronising.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/extension.h>

#include "codebook_update.cuh"

namespace z2z_kernels {
cudaError_t launch_codebook_update(const Codebook& cb, const Batch& batch, int batch_size,
                                   cudaStream_t stream);
}

namespace {

void check(const torch::Tensor& t, const char* name, torch::ScalarType dtype, const torch::Device& device) {
  TORCH_CHECK(t.device() == device, name, " must be on ", device, ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

int32_t* ints(torch::Tensor& t) { return t.data_ptr<int32_t>(); }

void codebook_update(torch::Tensor entries, torch::Tensor known_at, torch::Tensor num_entries,
                     torch::Tensor buffer, torch::Tensor buffer_len, torch::Tensor disabled,
                     torch::Tensor ids, torch::Tensor slots, torch::Tensor positions,
                     torch::Tensor expansion, torch::Tensor created, torch::Tensor candidate) {
  const auto device = entries.device();
  TORCH_CHECK(device.is_cuda(), "codebook_update runs on CUDA tensors");
  TORCH_CHECK(entries.dim() == 3, "entries must be [S, C, M]");
  const int64_t S = entries.size(0), C = entries.size(1), M = entries.size(2), B = ids.size(0);
  TORCH_CHECK(M >= 1 && M <= z2z_kernels::kMaxSubtokens, "max_subtokens must be in 1..",
              z2z_kernels::kMaxSubtokens, ", got ", M);
  TORCH_CHECK(C >= 1 && S * C * M < (int64_t{1} << 62), "bad codebook shape");
  const struct {
    torch::Tensor* t;
    const char* name;
    std::vector<int64_t> shape;
  } int_args[] = {
      {&entries, "entries", {S, C, M}},  {&known_at, "known_at", {S, C}},
      {&num_entries, "num_entries", {S}}, {&buffer, "buffer", {S, M}},
      {&buffer_len, "buffer_len", {S}},   {&ids, "ids", {B}},
      {&slots, "slots", {B}},             {&positions, "positions", {B}},
      {&expansion, "expansion", {B, M}},  {&created, "created", {B}},
      {&candidate, "candidate", {B, M}},
  };
  for (const auto& arg : int_args) {
    check(*arg.t, arg.name, torch::kInt32, device);
    TORCH_CHECK(arg.t->sizes() == torch::IntArrayRef(arg.shape), arg.name, " has shape ", arg.t->sizes(),
                ", expected ", torch::IntArrayRef(arg.shape));
  }
  check(disabled, "disabled", torch::kBool, device);
  TORCH_CHECK(disabled.dim() == 1 && disabled.size(0) >= 1, "disabled must be [V]");

  const z2z_kernels::Codebook cb{ints(entries), ints(known_at), ints(num_entries), ints(buffer),
                                 ints(buffer_len), disabled.data_ptr<bool>(),
                                 static_cast<int32_t>(disabled.size(0)), static_cast<int32_t>(C),
                                 static_cast<int32_t>(M)};
  const z2z_kernels::Batch batch{ints(ids), ints(slots), ints(positions), ints(expansion), ints(created),
                                 ints(candidate)};
  const c10::cuda::CUDAGuard guard(device);
  const cudaError_t err = z2z_kernels::launch_codebook_update(cb, batch, static_cast<int>(B),
                                                              c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "codebook_update launch failed: ", cudaGetErrorString(err));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "CUDA C++ kernels of z2z_vllm.ops (built from kernels/ by setup.py with Z2Z_BUILD_CUDA=1)";
  m.def("codebook_update", &codebook_update,
        "Batched codebook update, in place; see z2z_vllm.ops.codebook_update.");
}
