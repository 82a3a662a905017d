/* gemm_half.cu: C = A @ B with half A and B, accumulated in float: gemm.cu's tiled SGEMM for
 * float16 operands (set_gemm("tiled") with float16 arrays; the tensor-core version is gemm_wmma.cu).
 *
 * The layouts it serves are in minialex/cuda.py `gemm`. A is M x K and B is K x N, __half, read
 * through strides (in elements); C is M x N row-major, float (gemm_half_tiled_f32) or __half
 * (gemm_half_tiled_f16: the float sum rounded once to nearest, ties to even). blockIdx.z picks a
 * batch, with its own offsets a_sz, b_sz, c_sz.
 *
 * Thread mapping as in gemm.cu: a 16x16 block computes a 16x16 tile of C, one thread per element
 * (and the tiles gridDim.y rows further down). The K axis is walked in 16-wide steps: the block
 * copies a 16x16 tile of A and of B into shared memory, converted to float as they are read (a
 * half is exactly a float), waits, multiplies the tiles, and waits again before overwriting them.
 * The sum is a float, so a long K loses no more than float32's GEMM does; a half sum would stall:
 * past 2048, where halves are 2 apart, adding a product below 1 changes nothing.
 */
#include <cuda_fp16.h>

#define TILE 16

/* C(row0 + threadIdx.y, blockIdx.x * TILE + threadIdx.x) of one batch, summed in float */
__device__ float gemm_half_dot(const __half* A, const __half* B, int row0, int M, int N, int K,
                               int a_sm, int a_sk, int b_sk, int b_sn)
{
    __shared__ float a_tile[TILE][TILE];
    __shared__ float b_tile[TILE][TILE];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = row0 + ty;                         // m
    int col = blockIdx.x * TILE + tx;            // n
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        int ka = k0 + tx, kb = k0 + ty;          // this thread loads A(row, ka) and B(kb, col)
        a_tile[ty][tx] = (row < M && ka < K) ? __half2float(A[(long long)row * a_sm + (long long)ka * a_sk]) : 0.0f;
        b_tile[ty][tx] = (kb < K && col < N) ? __half2float(B[(long long)kb * b_sk + (long long)col * b_sn]) : 0.0f;
        __syncthreads();                         // both tiles complete
        for (int kk = 0; kk < TILE; ++kk)
            acc += a_tile[ty][kk] * b_tile[kk][tx];
        __syncthreads();                         // everyone done before the next load
    }
    return acc;
}

extern "C" __global__ void gemm_half_tiled_f32(float* __restrict__ c, const __half* __restrict__ a,
                                               const __half* __restrict__ b, int M, int N, int K,
                                               int a_sm, int a_sk, int b_sk, int b_sn,
                                               int a_sz, int b_sz, int c_sz)
{
    const __half* A = a + (long long)blockIdx.z * a_sz;
    const __half* B = b + (long long)blockIdx.z * b_sz;
    int col = blockIdx.x * TILE + threadIdx.x;
    // Row tiles blockIdx.y, blockIdx.y + gridDim.y, ...: the bound depends on the block only, so
    // every thread of the block reaches the same barriers.
    for (int row0 = blockIdx.y * TILE; row0 < M; row0 += gridDim.y * TILE) {
        float acc = gemm_half_dot(A, B, row0, M, N, K, a_sm, a_sk, b_sk, b_sn);
        int row = row0 + threadIdx.y;
        if (row < M && col < N)
            c[(long long)blockIdx.z * c_sz + (long long)row * N + col] = acc;
    }
}

extern "C" __global__ void gemm_half_tiled_f16(__half* __restrict__ c, const __half* __restrict__ a,
                                               const __half* __restrict__ b, int M, int N, int K,
                                               int a_sm, int a_sk, int b_sk, int b_sn,
                                               int a_sz, int b_sz, int c_sz)
{
    const __half* A = a + (long long)blockIdx.z * a_sz;
    const __half* B = b + (long long)blockIdx.z * b_sz;
    int col = blockIdx.x * TILE + threadIdx.x;
    for (int row0 = blockIdx.y * TILE; row0 < M; row0 += gridDim.y * TILE) {
        float acc = gemm_half_dot(A, B, row0, M, N, K, a_sm, a_sk, b_sk, b_sn);
        int row = row0 + threadIdx.y;
        if (row < M && col < N)
            c[(long long)blockIdx.z * c_sz + (long long)row * N + col] = __float2half_rn(acc);
    }
}
