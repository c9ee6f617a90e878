// s25 probe (compile only; ptxas -v): can a 384-thread warp-specialized kernel give its two consumer warpgroups the
// ~200 registers an RS design needs (128 accumulators of m64n256 + the A fragments of the chunk in flight and of
// the next one + two scaled decode tables + codes), through setmaxnreg, without spills? The producer warpgroup
// drops to 40. Not a kernel to run: the operands are placeholders, no barriers between the roles.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Xptxas=-v --expt-relaxed-constexpr -I csrc \
//     -c bench/results/h200/s25/probes/rs_regs.cu -o /tmp/rs_regs.o     [-DNO_SETMAXNREG]
#include <cuda_bf16.h>

#include "nf4_mma.cuh"
#include "wgmma.cuh"

using namespace nf4lora;
using T = __nv_bfloat16;

__global__ void __launch_bounds__(384, 1) rs_probe(float* out, const float* absmax, int chunks) {
  extern __shared__ __align__(1024) unsigned char smem[];
  const int tid = threadIdx.x, wg = tid / 128, lane = tid % 32, g = lane / 4, c = lane % 4;
  const float* code = reinterpret_cast<const float*>(smem + 65536);  // the 16 float32 code values
  if (wg == 0) {
#ifndef NO_SETMAXNREG
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
#endif
    for (int i = tid; i < 4096; i += 128) reinterpret_cast<uint4*>(smem)[i] = make_uint4(i, i * 3, i * 5, i * 7);
    return;
  }
#ifndef NO_SETMAXNREG
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
#endif
  const int h = wg - 1, row = 64 * h + 16 * (tid / 32 % 4) + g;  // rows row and row + 8 of the 128-row W tile
  float acc[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) acc[i] = 0.f;
  const uint64_t xdesc = sw128_desc(static_cast<uint32_t>(__cvta_generic_to_shared(smem + 32768)));
  uint32_t a[2][4][4];  // [buffer][k16 step][fragment]: the chunk in flight and the next
  auto decode_chunk = [&](int i, uint32_t (&frag)[4][4]) {
    // the chunk's 32 code bytes of rows `row` and `row + 8` (64 k each), byte c of each word: 4 k16 steps
    const uint4* w0 = reinterpret_cast<const uint4*>(smem + (i % 8) * 4096 + row * 32);
    const uint4* w1 = reinterpret_cast<const uint4*>(smem + (i % 8) * 4096 + (row + 8) * 32);
    const uint4 r0a = w0[0], r0b = w0[1], r1a = w1[0], r1b = w1[1];
    const uint32_t sel = c | ((c + 4) << 4);  // byte c of each of two words
    const uint32_t x0 = prmt(prmt(r0a.x, r0a.y, sel), prmt(r0a.z, r0a.w, sel), 0x5410u);
    const uint32_t x1 = prmt(prmt(r0b.x, r0b.y, sel), prmt(r0b.z, r0b.w, sel), 0x5410u);
    const uint32_t y0 = prmt(prmt(r1a.x, r1a.y, sel), prmt(r1a.z, r1a.w, sel), 0x5410u);
    const uint32_t y1 = prmt(prmt(r1b.x, r1b.y, sel), prmt(r1b.z, r1b.w, sel), 0x5410u);
    const Table t0 = scaled_table<T>(code, __ldg(absmax + row * chunks + i));
    const Table t1 = scaled_table<T>(code, __ldg(absmax + (row + 8) * chunks + i));
    uint32_t p0[4], p1[4], q0[4], q1[4];
    decode4(x0, t0, p0);
    decode4(x1, t0, p1);
    decode4(y0, t1, q0);
    decode4(y1, t1, q1);
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      frag[s][0] = p0[2 * s]; frag[s][1] = q0[2 * s]; frag[s][2] = p0[2 * s + 1]; frag[s][3] = q0[2 * s + 1];
      frag[2 + s][0] = p1[2 * s]; frag[2 + s][1] = q1[2 * s]; frag[2 + s][2] = p1[2 * s + 1]; frag[2 + s][3] = q1[2 * s + 1];
    }
  };
  auto step = [&](int i, uint32_t (&cur)[4][4], uint32_t (&next)[4][4]) {
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < 4; ++s) wgmma_m64k16<T, 256, true>(acc, cur[s], xdesc + 2 * s, 1);
    wgmma_commit();
    if (i + 1 < chunks) decode_chunk(i + 1, next);  // while this chunk's MMAs run
    wgmma_wait<0>();
  };
  decode_chunk(0, a[0]);
  for (int i = 0; i < chunks; i += 2) {  // two chunks per trip: the buffers indexed statically (registers)
    step(i, a[0], a[1]);
    if (i + 1 < chunks) step(i + 1, a[1], a[0]);
  }
#pragma unroll
  for (int i = 0; i < 128; ++i) out[(blockIdx.x * 256 + tid - 128) * 128 + i] = acc[i];
}
