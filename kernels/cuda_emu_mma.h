/* cuda_emu_mma.h: CUDA's <mma.h> for the emulator: the warp matrix functions (nvcuda::wmma) on
 * __half inputs, which a GPU since Volta (sm_70) runs on its tensor cores.
 *
 * A kernel writes `#include <mma.h>` as on a GPU; the emulator's build makes that name lead here
 * (minialex/emulator.py), and never shows this file to NVRTC. What is here:
 *
 *   fragment<matrix_a, M, N, K, __half, row_major | col_major>     an M x K tile of A
 *   fragment<matrix_b, M, N, K, __half, row_major | col_major>     a K x N tile of B
 *   fragment<accumulator, M, N, K, float | __half>                 an M x N tile of C
 *       (M, N, K) = (16, 16, 16), (32, 8, 16) or (8, 32, 16); num_elements and x[i] as in CUDA
 *   fill_fragment(f, v)
 *   load_matrix_sync(a_or_b, pointer, ldm)  load_matrix_sync(acc, pointer, ldm, mem_row_major | mem_col_major)
 *   mma_sync(d, a, b, c)                    D = A B + C
 *   store_matrix_sync(pointer, acc, ldm, mem_row_major | mem_col_major)
 *
 * A fragment is the warp's: its M*K (or K*N, M*N) elements are spread over the 32 threads, each
 * holding num_elements of them in x[]. CUDA leaves the spread unspecified (code may only apply
 * the same operation to every element); here thread `lane` holds elements lane * num_elements
 * .. + num_elements - 1 of the tile in row-major order. The _sync functions are warp-wide
 * collectives, emulated like the warp shuffles: each thread publishes its part (and the pointer
 * and ldm it was given) and waits until every thread of its warp has; then each computes its own
 * elements from what the warp published. All 32 threads must call them together, with the same
 * arguments: a thread missing, a warp of fewer than 32 threads, different pointers, a pointer not
 * 256-bit (32-byte) aligned or an ldm not a multiple of 16 bytes (8 halves, 4 floats) is an error
 * naming the function, where a GPU would give undefined results or a misaligned-address fault.
 *
 * mma_sync multiplies exactly (the product of two halves has 22 significant bits: a float holds
 * it) and adds in float, in k order, to C's element; a __half D is rounded once at the end. A
 * tensor core's adder keeps its own internal precision, so a GPU's last bits may differ.
 */
#pragma once
#include "cuda_emu_fp16.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K> struct emu_shape;   // the fragment's matrix: rows x cols
template <int M, int N, int K> struct emu_shape<matrix_a, M, N, K> { enum { rows = M, cols = K }; };
template <int M, int N, int K> struct emu_shape<matrix_b, M, N, K> { enum { rows = K, cols = N }; };
template <int M, int N, int K> struct emu_shape<accumulator, M, N, K> { enum { rows = M, cols = N }; };
template <typename Layout> struct emu_layout { static const layout_t value = mem_row_major; };
template <> struct emu_layout<col_major> { static const layout_t value = mem_col_major; };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
    static_assert((M == 16 && N == 16 && K == 16) || (M == 32 && N == 8 && K == 16) || (M == 8 && N == 32 && K == 16),
                  "cuda-emu: wmma fragments of __half have the shapes 16x16x16, 32x8x16 and 8x32x16");
    static_assert(std::is_same<Use, accumulator>::value ? std::is_same<T, float>::value || std::is_same<T, __half>::value
                                                        : std::is_same<T, __half>::value,
                  "cuda-emu: wmma matrix_a and matrix_b fragments hold __half, accumulators float or __half");
    static_assert(std::is_same<Use, accumulator>::value || std::is_same<Layout, row_major>::value ||
                  std::is_same<Layout, col_major>::value,
                  "cuda-emu: wmma matrix_a and matrix_b fragments need a layout: row_major or col_major");
public:
    enum { rows = emu_shape<Use, M, N, K>::rows, cols = emu_shape<Use, M, N, K>::cols };
    enum { num_elements = rows * cols / 32 };
    typedef T element_type;
    typedef T storage_element_type;
    T x[num_elements];
};

template <typename T> struct emu_same { typedef T type; };   // a parameter that takes conversions

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const typename emu_same<T>::type& v) {
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = v;
}

/* ----- the collectives ----- */

template <typename P> inline const void* emu_address(P p) { return (const void*)p; }
#ifdef EMU_DEBUG
template <typename T> inline const void* emu_address(emu::ptr<T> p) { return (const void*)(p.base + p.offset); }
#endif

/* The warp agrees on (pointer, ldm, layout), which CUDA requires to be aligned */
template <typename T> inline void emu_agree(const char* what, const void* pointer, unsigned ldm, layout_t layout) {
    emu::warp_call(what, pointer, (long long)ldm * 2 + layout, nullptr, 0);
    if (emu::gpu_alignment(pointer) % 32 != 0)
        emu::warp_misuse("%s: the pointer must be 256-bit (32-byte) aligned, got %p (CUDA's rule for wmma; a "
                         "GPU faults or reads wrong data)", what, pointer);
    if ((ldm * sizeof(T)) % 16 != 0)
        emu::warp_misuse("%s: ldm must be a multiple of 16 bytes (%d elements of %d bytes), got %u", what,
                         (int)(16 / sizeof(T)), (int)sizeof(T), ldm);
}

/* Element (row, col) of a matrix at p with leading dimension ldm */
inline long long emu_at(int row, int col, unsigned ldm, layout_t layout) {
    return layout == mem_row_major ? (long long)row * ldm + col : (long long)col * ldm + row;
}

template <typename F, typename P> inline void emu_load(F& f, P p, unsigned ldm, layout_t layout, const char* what) {
    emu_agree<typename F::element_type>(what, emu_address(p), ldm, layout);
    int lane = (int)(emu::linear_thread() % 32);
    for (int i = 0; i < f.num_elements; ++i) {
        int e = lane * f.num_elements + i;                     // this thread's element e of the tile
        f.x[i] = p[emu_at(e / f.cols, e % f.cols, ldm, layout)];
    }
}

template <typename F, typename P> inline void emu_store(P p, const F& f, unsigned ldm, layout_t layout) {
    emu_agree<typename F::element_type>("wmma::store_matrix_sync", emu_address(p), ldm, layout);
    int lane = (int)(emu::linear_thread() % 32);
    for (int i = 0; i < f.num_elements; ++i) {
        int e = lane * f.num_elements + i;
        p[emu_at(e / f.cols, e % f.cols, ldm, layout)] = f.x[i];
    }
}

#define EMU_WMMA_POINTERS(P, CP) \
template <typename Use, int M, int N, int K, typename T, typename Layout> \
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, CP(T) p, unsigned ldm) { \
    static_assert(!std::is_same<Use, accumulator>::value, "cuda-emu: an accumulator's load_matrix_sync takes a layout"); \
    emu_load(f, p, ldm, emu_layout<Layout>::value, "wmma::load_matrix_sync"); \
} \
template <int M, int N, int K, typename T> \
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, CP(T) p, unsigned ldm, layout_t layout) { \
    emu_load(f, p, ldm, layout, "wmma::load_matrix_sync"); \
} \
template <int M, int N, int K, typename T> \
inline void store_matrix_sync(P(T) p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout) { \
    emu_store(p, f, ldm, layout); \
}
#define EMU_RAW(T) typename emu_same<T*>::type
#define EMU_RAW_CONST(T) typename emu_same<const T*>::type
EMU_WMMA_POINTERS(EMU_RAW, EMU_RAW_CONST)
#ifdef EMU_DEBUG
#define EMU_CHECKED(T) typename emu_same<emu::ptr<T>>::type
#define EMU_CHECKED_CONST(T) typename emu_same<emu::ptr<const T>>::type
EMU_WMMA_POINTERS(EMU_CHECKED, EMU_CHECKED_CONST)
#undef EMU_CHECKED
#undef EMU_CHECKED_CONST
#endif
#undef EMU_RAW
#undef EMU_RAW_CONST
#undef EMU_WMMA_POINTERS

template <typename T> inline T emu_saturate(float v, bool satf) {
    if (!satf) return T(v);
    float most = std::is_same<T, __half>::value ? 65504.0f : 3.402823466e38f;
    return T(v != v ? 0.0f : v > most ? most : v < -most ? -most : v);
}

/* D = A B + C for the warp's tiles: every thread publishes its part of A and B, then computes
 * its own elements of D from the whole of both */
template <int M, int N, int K, typename LA, typename LB, typename TC, typename TD>
inline void mma_sync(fragment<accumulator, M, N, K, TD>& d, const fragment<matrix_a, M, N, K, __half, LA>& a,
                     const fragment<matrix_b, M, N, K, __half, LB>& b, const fragment<accumulator, M, N, K, TC>& c,
                     bool satf = false) {
    struct Part { __half a[M * K / 32], b[K * N / 32]; } mine;
    static_assert(sizeof(Part) <= emu::kWarpDataBytes, "cuda-emu: a warp call's data does not fit");
    memcpy(mine.a, a.x, sizeof mine.a);
    memcpy(mine.b, b.x, sizeof mine.b);
    unsigned k = emu::warp_call("wmma::mma_sync", nullptr, 0, &mine, sizeof mine);
    size_t t = emu::linear_thread(), lane = t % 32, first = t - lane;
    __half whole_a[M * K], whole_b[K * N];                     // the tiles, gathered from the 32 parts
    for (size_t l = 0; l < 32; ++l) {
        const Part* part = (const Part*)emu::warp_calls[k][first + l].data;
        memcpy(whole_a + l * (M * K / 32), part->a, sizeof part->a);
        memcpy(whole_b + l * (K * N / 32), part->b, sizeof part->b);
    }
    for (int i = 0; i < d.num_elements; ++i) {
        int e = (int)lane * d.num_elements + i, row = e / N, col = e % N;
        float sum = (float)c.x[i];
        for (int kk = 0; kk < K; ++kk)                         // each product exact in float
            sum += (float)whole_a[row * K + kk] * (float)whole_b[kk * N + col];
        d.x[i] = emu_saturate<TD>(sum, satf);
    }
}

}  // namespace wmma
}  // namespace nvcuda
