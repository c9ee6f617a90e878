// The only pybind11 module of nf4lora (imported as nf4lora._C). It links no libtorch: Python
// passes device pointers, sizes and the CUDA stream as integers. ops.py validates every
// argument (dtypes, sizes, devices) before calling here; the launchers re-check what a kernel
// relies on for memory safety (alignment, blocksize) and report CUDA errors as RuntimeError.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "launchers.h"

namespace py = pybind11;

namespace {

void check(const std::string& err) {
  if (!err.empty()) throw std::runtime_error("nf4lora._C: " + err);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "nf4lora CUDA kernels (raw pointers + shapes + stream; no libtorch)";
  m.def(
      "dequantize_nf4",
      [](uintptr_t out, int out_dtype, uintptr_t packed, uintptr_t absmax, uintptr_t quant_map,
         uintptr_t nested_absmax, uintptr_t nested_quant_map, float nested_offset, int64_t n,
         int blocksize, uintptr_t stream) {
        check(nf4lora::launch_dequantize_nf4(out, out_dtype, packed, absmax, quant_map,
                                              nested_absmax, nested_quant_map, nested_offset, n,
                                              blocksize, stream));
      },
      py::arg("out"), py::arg("out_dtype"), py::arg("packed"), py::arg("absmax"),
      py::arg("quant_map"), py::arg("nested_absmax"), py::arg("nested_quant_map"),
      py::arg("nested_offset"), py::arg("n"), py::arg("blocksize"), py::arg("stream"),
      "Dequantize n NF4 elements into out (W (N, K) row-major). Pointers are device addresses; "
      "nested_absmax = 0 means absmax is float32.");
  m.def(
      "cuda_device_count",
      []() {
        std::string err;
        const int count = nf4lora::cuda_device_count(&err);
        return py::make_tuple(count, err);
      },
      "(number of CUDA devices, error text when there are none). Never raises.");
}
