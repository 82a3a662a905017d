/* wmma_kernels.cu: test kernels for the emulator's <mma.h> (tests/test_half.py), written as for a
 * GPU (tests/test_nvrtc.py compiles them with NVRTC too). Warp w of the launch works on tile w of
 * each array: A and B tiles of M*K and K*N halves, C and D tiles of M*N.
 */
#include <cuda_fp16.h>
#include <mma.h>
using namespace nvcuda;

/* 16x16x16: A row-major, B column-major, C read row-major; D = 2 (A B + C) stored column-major.
 * num: the three fragments' num_elements */
extern "C" __global__ void wmma_16x16x16(float* __restrict__ d, const __half* __restrict__ a,
                                         const __half* __restrict__ b, const float* __restrict__ c,
                                         int* __restrict__ num)
{
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::load_matrix_sync(fa, a + warp * 256, 16);
    wmma::load_matrix_sync(fb, b + warp * 256, 16);
    wmma::load_matrix_sync(fc, c + warp * 256, 16, wmma::mem_row_major);
    wmma::mma_sync(fc, fa, fb, fc);
    for (int i = 0; i < fc.num_elements; ++i)     // the same operation on every element: legal
        fc.x[i] = 2.0f * fc.x[i];
    wmma::store_matrix_sync(d + warp * 256, fc, 16, wmma::mem_col_major);
    if (warp == 0 && threadIdx.x == 0) {
        num[0] = fa.num_elements;
        num[1] = fb.num_elements;
        num[2] = fc.num_elements;
    }
}

/* 32x8x16 with a __half accumulator: A column-major (ldm 32), B row-major (ldm 8), C zero;
 * D = A B rounded once to half, stored row-major (ldm 8) */
extern "C" __global__ void wmma_32x8x16(__half* __restrict__ d, const __half* __restrict__ a,
                                        const __half* __restrict__ b)
{
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    wmma::fragment<wmma::matrix_a, 32, 8, 16, __half, wmma::col_major> fa;
    wmma::fragment<wmma::matrix_b, 32, 8, 16, __half, wmma::row_major> fb;
    wmma::fragment<wmma::accumulator, 32, 8, 16, __half> fc;
    wmma::fill_fragment(fc, __float2half(0.0f));
    wmma::load_matrix_sync(fa, a + warp * 512, 32);
    wmma::load_matrix_sync(fb, b + warp * 128, 8);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(d + warp * 256, fc, 8, wmma::mem_row_major);
}

/* 8x32x16, float: D = A B + 1, A and B row-major, stored row-major */
extern "C" __global__ void wmma_8x32x16(float* __restrict__ d, const __half* __restrict__ a,
                                        const __half* __restrict__ b)
{
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
    wmma::fragment<wmma::matrix_a, 8, 32, 16, __half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 8, 32, 16, __half, wmma::row_major> fb;
    wmma::fragment<wmma::accumulator, 8, 32, 16, float> fc;
    wmma::fill_fragment(fc, 1.0f);
    wmma::load_matrix_sync(fa, a + warp * 128, 16);
    wmma::load_matrix_sync(fb, b + warp * 512, 32);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(d + warp * 256, fc, 32, wmma::mem_row_major);
}

/* Ones times ones from shared memory (D = 16 everywhere), or one of the mistakes a GPU punishes:
 * how 1 a pointer 16 bytes off 32-byte alignment, 2 an ldm of 12 halves (24 bytes), 3 one lane
 * with another pointer, 4 one lane returned, 5 a store 16 bytes off alignment */
extern "C" __global__ void wmma_misuse(float* __restrict__ d, int how)
{
    __shared__ __align__(32) __half ones[2 * 256];
    for (int e = threadIdx.x; e < 2 * 256; e += blockDim.x)
        ones[e] = __float2half(1.0f);
    __syncthreads();
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::fill_fragment(fc, 0.0f);
    const __half* p = ones;
    unsigned ldm = 16;
    if (how == 1) p = ones + 8;
    if (how == 2) ldm = 12;
    if (how == 3 && threadIdx.x % 32 == 5) p = ones + 16;
    if (how == 4 && threadIdx.x % 32 == 7) return;
    wmma::load_matrix_sync(fa, p, ldm);
    wmma::load_matrix_sync(fb, p, ldm);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync(how == 5 ? d + 4 : d, fc, 16, wmma::mem_row_major);
}
