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

/* CUDA's min and max overloads (the GPU has them for every arithmetic type; a lone int version
 * would silently truncate min(0.5f, 0.7f) to 0) */
#define EMU_MIN_MAX(T) \
    static inline T min(T a, T b) { return a < b ? a : b; } \
    static inline T max(T a, T b) { return a > b ? a : b; }
EMU_MIN_MAX(int)
EMU_MIN_MAX(unsigned int)
EMU_MIN_MAX(long long)
EMU_MIN_MAX(unsigned long long)
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
#undef EMU_MIN_MAX

/* Device intrinsics, as their exact library counterparts (a GPU's fast versions differ in the last
 * bits; math.h already supplies expf, logf, sqrtf, powf, fabsf, fminf, fmaxf, isnan, ...) */
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __powf(x, y) powf(x, y)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __tanf(x) tanf(x)
#define __log2f(x) log2f(x)
#define __log10f(x) log10f(x)
#define __exp10f(x) powf(10.0f, x)
#define __fdividef(x, y) ((x) / (y))
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, sizeof i); return i; }

/* Atomics: the threads of a launch run one at a time here, so a plain update is atomic */
static inline float atomicAdd(float* address, float value) { float old = *address; *address += value; return old; }
static inline int atomicAdd(int* address, int value) { int old = *address; *address += value; return old; }
static inline unsigned int atomicAdd(unsigned int* address, unsigned int value) { unsigned int old = *address; *address += value; return old; }
static inline int atomicMax(int* address, int value) { int old = *address; *address = max(old, value); return old; }
static inline int atomicMin(int* address, int value) { int old = *address; *address = min(old, value); return old; }
static inline int atomicExch(int* address, int value) { int old = *address; *address = value; return old; }
static inline float atomicExch(float* address, float value) { float old = *address; *address = value; return old; }

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
