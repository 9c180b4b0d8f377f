// torch binding of the CUDA kernel: registers torch.ops.k2_kernels.max_logit_cuda on the current stream.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include "bind_common.h"

namespace {

void max_logit_cuda(const at::Tensor& q1, const at::Tensor& k1, const std::optional<at::Tensor>& q2,
                    const std::optional<at::Tensor>& k2, const std::optional<at::Tensor>& key_mask, double scale,
                    at::Tensor& out) {
  TORCH_CHECK(out.device().is_cuda(), "max_logit_cuda: inputs must be CUDA tensors");
  const c10::cuda::CUDAGuard guard(out.device());
  const k2_max_logit_args args = k2::make_args(q1, k1, q2, k2, key_mask, scale, out);
  const int status = k2_max_logit_cuda(&args, out.data_ptr<float>(), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(status == 0, "max_logit_cuda: launch failed: ", cudaGetErrorString(static_cast<cudaError_t>(status)));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(k2_kernels, m) {
  m.def("max_logit_cuda(Tensor q1, Tensor k1, Tensor? q2, Tensor? k2, Tensor? key_mask, float scale, Tensor(a!) out)"
        " -> ()");
  m.impl("max_logit_cuda", &max_logit_cuda);
}
