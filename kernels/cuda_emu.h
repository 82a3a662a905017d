/* cuda_emu.h: the CUDA built-ins, for compiling a kernels/*.cu file with a plain C++ compiler.
 *
 * Used by minialex's CPU emulator (minialex/emulator.py, device "cuda-emu"); never seen by NVRTC.
 * A launch runs the blocks one after another. Within a block each CUDA thread is a fiber (a
 * ucontext with its own stack): a fiber runs until it reaches a barrier or returns, then the next
 * fiber runs. __syncthreads() is passed once every thread of the block has reached it; a warp
 * primitive (__shfl_*_sync, __ballot_sync, __syncwarp) once every thread of its 32-thread warp has.
 * __shared__ arrays are function statics: one copy, seen by all the threads of the block.
 * Kernels whose file has no barrier run each thread as a plain call (no fibers needed).
 * printf works: output comes thread after thread, in launch order, into a buffer that Python
 * writes to sys.stdout after the launch (so a notebook shows it), or, in the child process that
 * runs a kernel of your own, straight to a file (so what came before a crash is kept). At most
 * 1 MiB per launch, as a GPU's printf buffer: the rest is dropped (and said so).
 * In a debug build (EMU_DEBUG, minialex.cuda.launch(..., debug=True)) every pointer parameter is an
 * emu::ptr that checks each access against its array's size and reports the first access outside.
 * CUDA's <cuda_fp16.h> and <mma.h> are cuda_emu_fp16.h (__half, __half2) and cuda_emu_mma.h (the
 * wmma fragments), which a kernel gets by including CUDA's names (the build maps them). A wmma
 * operation is a warp-wide call (warp_call below): each thread publishes its part, waits for its
 * warp, and checks that all 32 threads called it together with the same arguments.
 *
 * Portability: Linux (g++ or clang++) and macOS (Apple clang, Intel and Apple Silicon). macOS's
 * <ucontext.h> refuses to compile unless _XOPEN_SOURCE is defined first (its ucontext_t has
 * another size without it), and _XOPEN_SOURCE alone hides the Darwin names (MAP_ANON) that
 * _DARWIN_C_SOURCE brings back; so both come before any include. The ucontext functions are
 * deprecated there but work. A fiber's stack is mmap'd (256 KiB, untouched pages cost nothing)
 * with a guard below it, so a stack overflow is a clean segmentation fault.
 */
#pragma once
#if defined(__APPLE__)
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 600
#endif
#ifndef _DARWIN_C_SOURCE
#define _DARWIN_C_SOURCE
#endif
#endif
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>
#include <algorithm>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#if !defined(MAP_ANONYMOUS) && defined(MAP_ANON)
#define MAP_ANONYMOUS MAP_ANON
#endif
#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

static dim3 threadIdx, blockIdx, blockDim, gridDim;

struct float2 { float x, y; };
static inline float2 make_float2(float x, float y) { float2 v; v.x = x; v.y = y; return v; }

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
static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned int)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }

/* Atomics: the threads of a launch run one at a time here, so a plain update is atomic */
static inline float atomicAdd(float* address, float value) { float old = *address; *address += value; return old; }
static inline int atomicAdd(int* address, int value) { int old = *address; *address += value; return old; }
static inline unsigned int atomicAdd(unsigned int* address, unsigned int value) { unsigned int old = *address; *address += value; return old; }
static inline int atomicMax(int* address, int value) { int old = *address; *address = max(old, value); return old; }
static inline int atomicMin(int* address, int value) { int old = *address; *address = min(old, value); return old; }
static inline int atomicExch(int* address, int value) { int old = *address; *address = value; return old; }
static inline float atomicExch(float* address, float value) { float old = *address; *address = value; return old; }

namespace emu {

static const size_t kStackBytes = 256 * 1024;   // a fiber's stack (untouched pages cost nothing)
static const size_t kGuardBytes = 64 * 1024;    // below it: no access (a multiple of 4 and 16 KiB pages)
enum Wait { RUNNING, AT_BLOCK, AT_WARP };

struct Fiber {
    ucontext_t context;
    dim3 thread;
    bool done;
    Wait wait;
    unsigned exchanges;          // warp primitives passed: picks the exchange slot (double-buffered)
    char* stack;
};

static ucontext_t scheduler;
static Fiber* current = nullptr;
static std::vector<Fiber>* block_fibers = nullptr;
static const std::function<void()>* body = nullptr;
static int error = 0;            // 1: a barrier not every thread reached; 2: an access out of bounds;
                                 // 3: no memory for the fibers' stacks; 4: a warp-wide call misused
static char message[512];
static unsigned long long slots[2][1024];   // a warp primitive's values, per thread of the block
static unsigned long long block_serial = 0;  // blocks run with fibers so far: tells this block's calls from older ones

/* The fibers' stacks: one mapping kept from launch to launch, grown to the largest block seen;
 * below each stack (stacks grow down) a guard that may not be touched, so that running off a
 * stack is a segmentation fault (a frame larger than the guard may jump it) */
static char* stack_pool = nullptr;
static size_t stack_pool_count = 0;
static size_t stack_stride() { return kGuardBytes + kStackBytes; }

static bool reserve_stacks(size_t count) {
    if (count <= stack_pool_count) return true;
    if (stack_pool) munmap(stack_pool, stack_pool_count * stack_stride());
    stack_pool_count = 0;
    void* pool = mmap(nullptr, count * stack_stride(), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (pool == MAP_FAILED) { stack_pool = nullptr; return false; }
    stack_pool = (char*)pool;
    stack_pool_count = count;
    for (size_t i = 0; i < count; ++i)
        mprotect(stack_pool + i * stack_stride(), kGuardBytes, PROT_NONE);
    return true;
}

/* printf, captured: into `output` (Python takes it after the launch), or with output_fd >= 0
 * written at once to that file descriptor (a child process, whose memory a crash loses) */
static std::string output;
static int output_fd = -1;
static size_t output_bytes = 0;  // this launch's, at most kOutputLimit
static bool output_dropped = false;
static const size_t kOutputLimit = 1 << 20;

static int print(const char* format, ...) {
    va_list args;
    va_start(args, format);
    int n = vsnprintf(nullptr, 0, format, args);
    va_end(args);
    if (n <= 0) return n;
    std::string text((size_t)n + 1, '\0');
    va_start(args, format);
    vsnprintf(&text[0], text.size(), format, args);
    va_end(args);
    size_t keep = std::min((size_t)n, kOutputLimit - output_bytes);
    if (keep < (size_t)n) output_dropped = true;
    output_bytes += keep;
    if (output_fd < 0) { output.append(text.data(), keep); return n; }
    for (size_t done = 0; done < keep;) {
        ssize_t wrote = write(output_fd, text.data() + done, keep - done);
        if (wrote <= 0) break;
        done += (size_t)wrote;
    }
    return n;
}

static void fiber_main() {
    (*body)();
    current->done = true;  // returning resumes `scheduler` (uc_link)
}

static size_t linear_thread() { return threadIdx.x + (size_t)blockDim.x * (threadIdx.y + (size_t)blockDim.y * threadIdx.z); }

static void yield(Wait why) {
    current->wait = why;
    swapcontext(&current->context, &scheduler);
}

static void run_block_with_fibers(std::vector<Fiber>& fibers) {
    size_t i = 0;
    for (unsigned int z = 0; z < blockDim.z; ++z)
        for (unsigned int y = 0; y < blockDim.y; ++y)
            for (unsigned int x = 0; x < blockDim.x; ++x, ++i) {
                Fiber& f = fibers[i];
                f.thread = dim3(x, y, z);
                f.done = false;
                f.wait = RUNNING;
                f.exchanges = 0;
                getcontext(&f.context);
                f.context.uc_stack.ss_sp = f.stack;
                f.context.uc_stack.ss_size = kStackBytes;
                f.context.uc_link = &scheduler;
                makecontext(&f.context, fiber_main, 0);
            }
    block_fibers = &fibers;
    ++block_serial;
    for (;;) {
        bool ran = false;
        for (Fiber& f : fibers) {      // every runnable thread runs to its next barrier or to its end
            if (f.done || f.wait != RUNNING) continue;
            current = &f;
            threadIdx = f.thread;
            swapcontext(&scheduler, &f.context);
            ran = true;
            if (error) return;
        }
        size_t live = 0, at_block = 0, done = 0;
        for (Fiber& f : fibers) {
            if (f.done) { ++done; continue; }
            ++live;
            if (f.wait == AT_BLOCK) ++at_block;
        }
        if (live == 0) return;
        bool released = false;
        for (size_t w = 0; w < fibers.size(); w += 32) {   // a warp passes when all its live threads arrived
            size_t end = std::min(fibers.size(), w + 32), arrived = 0, alive = 0;
            for (size_t t = w; t < end; ++t)
                if (!fibers[t].done) { ++alive; if (fibers[t].wait == AT_WARP) ++arrived; }
            if (alive > 0 && arrived == alive) {
                for (size_t t = w; t < end; ++t) fibers[t].wait = RUNNING;
                released = true;
            }
        }
        if (!released && at_block == live) {
            if (done > 0) { error = 1; return; }          // some threads left while others wait: a GPU hangs
            for (Fiber& f : fibers) f.wait = RUNNING;
            released = true;
        }
        if (!released && !ran) { error = 1; return; }      // waiting on each other: a deadlock on a GPU
    }
}

/* Run `kernel` over gridDim x blockDim threads (only block `ob` / thread `ot` when given: x >= 0);
 * returns 0, 1 for a divergent barrier, 2 for an access out of bounds (debug builds), 3 when the
 * fibers' stacks could not be mapped. */
static int launch(dim3 grid, dim3 block, bool barriers, const std::function<void()>& kernel,
                  long long obx = -1, long long oby = 0, long long obz = 0,
                  long long otx = -1, long long oty = 0, long long otz = 0) {
    gridDim = grid;
    blockDim = block;
    body = &kernel;
    error = 0;
    message[0] = 0;
    output.clear();
    output_bytes = 0;
    output_dropped = false;
    std::vector<Fiber> fibers;
    if (barriers) {
        fibers.resize((size_t)block.x * block.y * block.z);
        if (!reserve_stacks(fibers.size())) {
            snprintf(message, sizeof message, "could not map %zu fiber stacks of %zu KiB", fibers.size(),
                     kStackBytes / 1024);
            return error = 3;
        }
        for (size_t i = 0; i < fibers.size(); ++i) fibers[i].stack = stack_pool + i * stack_stride() + kGuardBytes;
    }
    for (unsigned int bz = 0; bz < grid.z; ++bz)
        for (unsigned int by = 0; by < grid.y; ++by)
            for (unsigned int bx = 0; bx < grid.x; ++bx) {
                if (obx >= 0 && (bx != obx || by != oby || bz != obz)) continue;
                blockIdx = dim3(bx, by, bz);
                if (barriers) {
                    run_block_with_fibers(fibers);
                    if (error) return error;
                    continue;
                }
                for (unsigned int z = 0; z < block.z; ++z)
                    for (unsigned int y = 0; y < block.y; ++y)
                        for (unsigned int x = 0; x < block.x; ++x) {
                            if (otx >= 0 && (x != otx || y != oty || z != otz)) continue;
                            threadIdx = dim3(x, y, z);
                            kernel();
                            if (error) return error;
                        }
            }
    return 0;
}

static void out_of_bounds(const char* array, long long index, long long size) {
    if (error) return;
    error = 2;
    snprintf(message, sizeof message, "%s[%lld] accessed, outside its %lld elements, by block (%u, %u, %u) "
             "thread (%u, %u, %u)", array, index, size, blockIdx.x, blockIdx.y, blockIdx.z,
             threadIdx.x, threadIdx.y, threadIdx.z);
}

/* A pointer that knows its array: every access is checked (debug builds only). One made from a
 * plain pointer (&y[i], a __shared__ array, nullptr, a cast) does not know its array (size -1)
 * and is not checked: a crash through it is caught by the child process the launch runs in. */
template <typename T> struct ptr {
    T* base; long long size, offset; const char* name;
    ptr() : base(nullptr), size(0), offset(0), name("?") {}
    ptr(T* b) : base(b), size(-1), offset(0), name("?") {}
    ptr(T* b, long long n, const char* s, long long o = 0) : base(b), size(n), offset(o), name(s) {}
    template <typename U> ptr(const ptr<U>& p) : base(p.base), size(p.size), offset(p.offset), name(p.name) {}
    T& operator[](long long i) const {
        long long at = offset + i;
        if (size >= 0 && (at < 0 || at >= size)) {
            static typename std::remove_const<T>::type dummy{};
            out_of_bounds(name, at, size);
            return dummy;
        }
        return base[at];
    }
    T& operator*() const { return (*this)[0]; }
    T* operator->() const { return &(*this)[0]; }
    template <typename U> explicit operator U*() const { return (U*)(base + offset); }   // a cast: unchecked
    explicit operator bool() const { return base + offset != nullptr; }
    ptr operator+(long long d) const { return ptr(base, size, name, offset + d); }
    ptr operator-(long long d) const { return ptr(base, size, name, offset - d); }
    friend ptr operator+(long long d, const ptr& p) { return p + d; }
    ptr& operator+=(long long d) { offset += d; return *this; }
    ptr& operator-=(long long d) { offset -= d; return *this; }
    ptr& operator++() { ++offset; return *this; }
    ptr& operator--() { --offset; return *this; }
    ptr operator++(int) { ptr before = *this; ++offset; return before; }
    ptr operator--(int) { ptr before = *this; --offset; return before; }
    long long operator-(const ptr& p) const { return (base + offset) - (p.base + p.offset); }
    bool operator<(const ptr& p) const { return base + offset < p.base + p.offset; }
    bool operator>(const ptr& p) const { return p < *this; }
    bool operator<=(const ptr& p) const { return !(p < *this); }
    bool operator>=(const ptr& p) const { return !(*this < p); }
    bool operator!=(const ptr& p) const { return base + offset != p.base + p.offset; }
    bool operator==(const ptr& p) const { return !(*this != p); }
};

/* The value exchange behind the warp primitives: publish, wait for the warp, read a lane's. */
template <typename T> static unsigned long long bits(T v) { unsigned long long b = 0; memcpy(&b, &v, sizeof v); return b; }
template <typename T> static T from_bits(unsigned long long b) { T v; memcpy(&v, &b, sizeof v); return v; }

static unsigned exchange(unsigned long long value) {
    if (!current) { error = 1; snprintf(message, sizeof message, "a warp primitive in a kernel run without fibers"); return 0; }
    unsigned k = current->exchanges++ & 1;
    slots[k][linear_thread()] = value;
    yield(AT_WARP);
    return k;
}

/* A warp-wide call with more to share than one value (the wmma fragment operations, <mma.h>): each
 * thread publishes the pointer and argument it was called with and `bytes` of data, waits for its
 * warp, and checks that all 32 threads of the warp called `what` together with the same pointer and
 * argument (error 4 otherwise). Returns the slot index k: warp_calls[k][thread].data is what each
 * thread published, valid until the warp's next call but one (double-buffered, as exchange). */
static const size_t kWarpDataBytes = 128;
struct WarpCall { unsigned long long ticket; const char* what; const void* pointer; long long argument;
                  unsigned char data[kWarpDataBytes]; };
static WarpCall warp_calls[2][1024];

/* The launch's arrays (its pointer arguments, set by the launcher): a GPU allocates each one 256-byte
 * aligned (cudaMalloc, CuPy), the host's NumPy arrays are only 16-byte aligned, so an address inside
 * one is aligned as its offset from the array's start; any other (__shared__, local) as it is. */
struct Array { const char* base; size_t bytes; };
static Array arrays[64];
static size_t array_count = 0;

static size_t gpu_alignment(const void* pointer) {
    const char* p = (const char*)pointer;
    for (size_t i = 0; i < array_count; ++i)
        if (p >= arrays[i].base && p < arrays[i].base + arrays[i].bytes) return (size_t)(p - arrays[i].base) % 256;
    return (size_t)p % 256;
}

static void warp_misuse(const char* format, ...) {
    if (error) return;
    error = 4;
    va_list args;
    va_start(args, format);
    int n = vsnprintf(message, sizeof message, format, args);
    va_end(args);
    if (n >= 0 && (size_t)n < sizeof message)
        snprintf(message + n, sizeof message - n, " (block (%u, %u, %u) thread (%u, %u, %u))", blockIdx.x,
                 blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
}

static unsigned warp_call(const char* what, const void* pointer, long long argument, const void* data, size_t bytes) {
    if (!current) { error = 1; snprintf(message, sizeof message, "%s in a kernel run without fibers", what); return 0; }
    size_t t = linear_thread(), first = t - t % 32, threads = (size_t)blockDim.x * blockDim.y * blockDim.z;
    unsigned k = current->exchanges & 1;
    WarpCall& mine = warp_calls[k][t];
    mine.ticket = (block_serial << 32) | current->exchanges++;
    mine.what = what;
    mine.pointer = pointer;
    mine.argument = argument;
    if (bytes) memcpy(mine.data, data, bytes);
    yield(AT_WARP);
    if (first + 32 > threads) {
        warp_misuse("%s: threads %zu to %zu of the block make a warp of %zu; it needs all 32 threads of a warp "
                    "(make the block a multiple of 32 threads)", what, first, threads - 1, threads - first);
        return k;
    }
    for (size_t l = 0; l < 32; ++l) {
        const WarpCall& other = warp_calls[k][first + l];
        if (other.ticket != mine.ticket || strcmp(other.what, what) != 0) {
            warp_misuse("%s: thread %zu of the block (lane %zu of its warp) did not call it with the rest of its warp "
                        "(returned, or waits at another warp-wide call); all 32 threads must call it together",
                        what, first + l, l);
            return k;
        }
        if (other.pointer != pointer || other.argument != argument) {
            warp_misuse("%s: the threads of a warp passed different arguments (lane %zu: %p, lane %zu: %p, or a "
                        "different ldm or layout); CUDA requires the same in every thread of the warp", what,
                        t - first, pointer, l, other.pointer);
            return k;
        }
    }
    return k;
}

}  // namespace emu

#define printf(...) emu::print(__VA_ARGS__)

static inline void __syncthreads() {
    if (emu::current) emu::yield(emu::AT_BLOCK);
}

static inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)mask; emu::exchange(0); }
static inline unsigned __activemask() { return 0xffffffffu; }

template <typename T> static inline T emu_shfl_from(unsigned mask, T v, long long source_lane, int width) {
    (void)mask;
    size_t t = emu::linear_thread();
    unsigned k = emu::exchange(emu::bits(v));
    long long lane = (long long)(t % 32), segment = lane - lane % width;
    if (source_lane < segment || source_lane >= segment + width) return v;   // outside the segment: own value
    return emu::from_bits<T>(emu::slots[k][t - lane + source_lane]);
}
template <typename T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    long long lane = (long long)(emu::linear_thread() % 32);
    return emu_shfl_from(mask, v, lane - lane % width + (src % width), width);
}
template <typename T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return emu_shfl_from(mask, v, (long long)(emu::linear_thread() % 32) + delta, width);
}
template <typename T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return emu_shfl_from(mask, v, (long long)(emu::linear_thread() % 32) - (long long)delta, width);
}
template <typename T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return emu_shfl_from(mask, v, (long long)((emu::linear_thread() % 32) ^ (unsigned)lane_mask), width);
}
static inline unsigned __ballot_sync(unsigned mask, int predicate) {
    size_t t = emu::linear_thread(), lane = t % 32;
    unsigned k = emu::exchange(predicate ? 1 : 0), votes = 0;
    size_t lanes = std::min<size_t>(32, (size_t)blockDim.x * blockDim.y * blockDim.z - (t - lane));
    for (size_t l = 0; l < lanes; ++l)
        if (((mask >> l) & 1u) && emu::slots[k][t - lane + l]) votes |= 1u << l;
    return votes;
}
static inline int __any_sync(unsigned mask, int p) { return __ballot_sync(mask, p) != 0; }
static inline int __all_sync(unsigned mask, int p) { return __ballot_sync(mask, p) == (mask & __ballot_sync(mask, 1)); }
static inline int atomicCAS(int* address, int compare, int value) { int old = *address; if (old == compare) *address = value; return old; }
static inline unsigned int atomicCAS(unsigned int* address, unsigned int compare, unsigned int value) {
    unsigned int old = *address; if (old == compare) *address = value; return old;
}
static inline unsigned int atomicMax(unsigned int* address, unsigned int value) { unsigned int old = *address; *address = max(old, value); return old; }
static inline unsigned int atomicMin(unsigned int* address, unsigned int value) { unsigned int old = *address; *address = min(old, value); return old; }

#ifdef EMU_DEBUG
/* Atomics on checked pointers (atomicAdd(y + i, v) as well as atomicAdd(&y[i], v)) */
template <typename T, typename V> static inline T atomicAdd(emu::ptr<T> p, V v) { return atomicAdd(&*p, (T)v); }
template <typename T, typename V> static inline T atomicMax(emu::ptr<T> p, V v) { return atomicMax(&*p, (T)v); }
template <typename T, typename V> static inline T atomicMin(emu::ptr<T> p, V v) { return atomicMin(&*p, (T)v); }
template <typename T, typename V> static inline T atomicExch(emu::ptr<T> p, V v) { return atomicExch(&*p, (T)v); }
template <typename T, typename V> static inline T atomicCAS(emu::ptr<T> p, V c, V v) { return atomicCAS(&*p, (T)c, (T)v); }
#endif
