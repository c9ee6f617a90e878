// The launchers of nf4lora._C as a table of C function pointers, handed to the libtorch-linked
// autograd node (csrc/node.cpp, nf4lora._node) through a PyCapsule named "nf4lora._C.launch_table".
// Plain C types only: the two modules are built separately (CMake + nvcc, and torch's extension
// builder), so nothing C++-specific (std::string, exceptions) crosses between them.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

// The NF4 state's launch arguments (as the launchers take them).
struct Nf4loraState {
  uintptr_t packed, absmax, quant_map, nested_absmax, nested_quant_map;
  float nested_offset;
  int blocksize;
};

// launch_qlora_gemv's arguments (launchers.h), in its order.
struct Nf4loraGemvCall {
  uintptr_t y, x, x_lora, A, B, bias, u, workspace;
  int dtype;
  Nf4loraState w;
  int64_t M, N, K, r;
  float scale;
  int splits, tiles, pipeline;
  uintptr_t counters;
  int64_t n_counters;
  uintptr_t stream;
};

// launch_qlora_mma's arguments.
struct Nf4loraMmaCall {
  uintptr_t y, x, x_lora, A, B, bias, u;
  int fold_lora;
  uintptr_t workspace;
  int64_t workspace_bytes;
  int dtype;
  Nf4loraState w;
  int64_t M, N, K, r;
  float scale;
  int variant, block_m, u_given;
  uintptr_t counters;
  int64_t n_counters;
  uintptr_t stream;
};

// launch_qlora_dx's arguments.
struct Nf4loraDxCall {
  uintptr_t dx, g, gB, A;
  int dtype;
  Nf4loraState w;
  int64_t M, N, K, r;
  float scale;
  int block_m, variant;
  uintptr_t stream;
};

// Each launch returns 0 once its kernels are queued, else 1 with the launcher's message (the same
// as _C's RuntimeError) in err, NUL-terminated and cut to errlen bytes.
struct Nf4loraLaunchTable {
  int version;  // kNf4loraLaunchTableVersion of the _C that made it
  int (*qlora_gemv)(const Nf4loraGemvCall* call, char* err, size_t errlen);
  int (*qlora_mma)(const Nf4loraMmaCall* call, char* err, size_t errlen);
  int (*qlora_dx)(const Nf4loraDxCall* call, char* err, size_t errlen);
};

}  // extern "C"

constexpr int kNf4loraLaunchTableVersion = 1;
constexpr const char* kNf4loraLaunchTableName = "nf4lora._C.launch_table";  // the capsule's name
