/* cuda_emu.h: the CUDA built-ins, for compiling a kernels/*.cu file with a plain C++ compiler.
 *
 * Used by minialex/cuda.py's CPU emulator (device "cuda-emu"); never seen by NVRTC or nvcc.
 * A launch runs the blocks one after another. Within a block each CUDA thread is a fiber (a
 * ucontext with its own stack): a fiber runs until it reaches __syncthreads() or returns, then
 * the next fiber runs; a barrier is passed once every thread of the block has reached it.
 * __shared__ arrays are function statics: one copy, seen by all the threads of the block.
 * Kernels whose file has no __syncthreads run each thread as a plain call (no fibers needed).
 */
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <algorithm>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

static dim3 threadIdx, blockIdx, blockDim, gridDim;

static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline float atomicAdd(float* address, float value) { float old = *address; *address += value; return old; }
static inline int atomicAdd(int* address, int value) { int old = *address; *address += value; return old; }
/* __expf, __logf, __powf: glibc declares them already */
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

namespace emu {

static const size_t kStackBytes = 64 * 1024;

struct Fiber {
    ucontext_t context;
    dim3 thread;
    bool done;
    std::vector<char> stack;
};

static ucontext_t scheduler;
static Fiber* current = nullptr;
static const std::function<void()>* body = nullptr;
static int error = 0;  // 1: a barrier that not every thread reached

static void fiber_main() {
    (*body)();
    current->done = true;  // returning resumes `scheduler` (uc_link)
}

static void run_block_with_fibers(std::vector<Fiber>& fibers) {
    size_t i = 0;
    for (unsigned int z = 0; z < blockDim.z; ++z)
        for (unsigned int y = 0; y < blockDim.y; ++y)
            for (unsigned int x = 0; x < blockDim.x; ++x, ++i) {
                Fiber& f = fibers[i];
                f.thread = dim3(x, y, z);
                f.done = false;
                getcontext(&f.context);
                f.context.uc_stack.ss_sp = f.stack.data();
                f.context.uc_stack.ss_size = f.stack.size();
                f.context.uc_link = &scheduler;
                makecontext(&f.context, fiber_main, 0);
            }
    for (;;) {  // one round: every live thread runs to its next barrier or to its end
        size_t finished = 0, waiting = 0;
        for (Fiber& f : fibers) {
            if (f.done) { ++finished; continue; }
            current = &f;
            threadIdx = f.thread;
            swapcontext(&scheduler, &f.context);
            if (f.done) ++finished; else ++waiting;
        }
        if (waiting == 0) return;
        if (finished > 0) { error = 1; return; }  // some threads left while others wait: a hang on a GPU
    }
}

/* Run `kernel` over gridDim x blockDim threads; returns 0, or 1 for a divergent barrier. */
static int launch(dim3 grid, dim3 block, bool barriers, const std::function<void()>& kernel) {
    gridDim = grid;
    blockDim = block;
    body = &kernel;
    error = 0;
    std::vector<Fiber> fibers;
    if (barriers) {
        fibers.resize((size_t)block.x * block.y * block.z);
        for (Fiber& f : fibers) f.stack.resize(kStackBytes);
    }
    for (unsigned int bz = 0; bz < grid.z; ++bz)
        for (unsigned int by = 0; by < grid.y; ++by)
            for (unsigned int bx = 0; bx < grid.x; ++bx) {
                blockIdx = dim3(bx, by, bz);
                if (barriers) {
                    run_block_with_fibers(fibers);
                    if (error) return error;
                    continue;
                }
                for (unsigned int z = 0; z < block.z; ++z)
                    for (unsigned int y = 0; y < block.y; ++y)
                        for (unsigned int x = 0; x < block.x; ++x) {
                            threadIdx = dim3(x, y, z);
                            kernel();
                        }
            }
    return 0;
}

}  // namespace emu

static inline void __syncthreads() {
    if (emu::current) swapcontext(&emu::current->context, &emu::scheduler);
}
