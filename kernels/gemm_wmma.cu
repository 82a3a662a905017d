/* gemm_wmma.cu: C = A @ B on tensor cores: half A and B, float accumulation (CUDA's wmma API).
 *
 * What a tensor core does: one instruction, issued by a whole warp together, multiplies a 16x16
 * tile of A by a 16x16 tile of B and adds the product to a 16x16 tile C (4096 multiply-adds, where
 * a thread's FMA does one). Each product of two halves is exact (11 significant bits each, 22
 * together, which a float holds) and the sum is kept in float: float32 accumulation at the memory
 * and multiplier cost of half. An A100 does 312 TFLOP/s so, against 19.5 TFLOP/s of float32 FMA.
 * The tiles live in "fragments": registers spread over the warp's 32 threads in a layout the
 * hardware chooses, which nvcuda::wmma (<mma.h>, sm_70 and later) hides behind
 * load_matrix_sync, mma_sync and store_matrix_sync. Every thread of the warp calls each of them,
 * with the same arguments.
 *
 * The layouts it serves: minialex/cuda.py `gemm` with set_gemm("wmma") and float16 operands. A is
 * M x K and B is K x N, __half, read through strides (in elements: a transposed operand is swapped
 * strides); C is M x N row-major, float (gemm_wmma_f32) or __half (gemm_wmma_f16, rounded once at
 * the end). blockIdx.z picks a batch, with its own offsets a_sz, b_sz, c_sz.
 *
 * Thread mapping: a block of 4 warps (128 threads) computes a 32x32 tile of C, each warp a 16x16
 * quarter of it: warp w takes rows 16 * (w / 2) and columns 16 * (w % 2) of the tile (and the tiles
 * gridDim.y * 32 rows further down, when C has more than 65535 row tiles). K is walked 16 at a
 * time: the block copies a 32x16 tile of A and a 16x32 tile of B into shared memory (4 elements of
 * each per thread), with zeros where the tile passes the matrix's edge, so M, N and K need not be
 * multiples of 16 (the zeros add nothing to the sums); waits; then each warp loads its 16x16
 * fragments of both and multiplies them into its accumulator, and the block waits again before
 * the next copy. At the end each warp stores its accumulator into a float tile in shared memory,
 * and the block copies the part of the tile that lies inside C out to C: a wmma store writes a
 * whole 16x16 tile to a 32-byte-aligned address, which at C's edges would write past them.
 * Shared memory: A 1 KiB, B 1 KiB, C 4 KiB, 32-byte aligned as wmma requires.
 */
#include <cuda_fp16.h>
#include <mma.h>
using namespace nvcuda;

#define FRAG 16                  // a fragment's tiles: 16x16x16
#define BLOCK_TILE 32            // a block's tile of C: 2 x 2 warps of 16x16
#define THREADS 128              // 4 warps

/* The block's 32x32 tile of C at (row0, col0), summed over all of K, into c_tile (row-major) */
__device__ void gemm_wmma_block(float* c_tile, const __half* A, const __half* B, int row0, int col0,
                                int M, int N, int K, int a_sm, int a_sk, int b_sk, int b_sn)
{
    __shared__ __align__(32) __half a_tile[BLOCK_TILE][FRAG];   // A(row0 + r, k0 + kk)
    __shared__ __align__(32) __half b_tile[FRAG][BLOCK_TILE];   // B(k0 + kk, col0 + cc)
    int t = threadIdx.x;
    int warp = t / 32;
    int warp_row = (warp / 2) * FRAG, warp_col = (warp % 2) * FRAG;   // this warp's quarter
    wmma::fragment<wmma::matrix_a, FRAG, FRAG, FRAG, __half, wmma::row_major> a_frag;
    wmma::fragment<wmma::matrix_b, FRAG, FRAG, FRAG, __half, wmma::row_major> b_frag;
    wmma::fragment<wmma::accumulator, FRAG, FRAG, FRAG, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int k0 = 0; k0 < K; k0 += FRAG) {
        for (int e = t; e < BLOCK_TILE * FRAG; e += THREADS) {        // 512 elements of each tile
            int r = e / FRAG, kk = e % FRAG;                          // a_tile[r][kk]
            int row = row0 + r, ka = k0 + kk;
            a_tile[r][kk] = (row < M && ka < K) ? A[(long long)row * a_sm + (long long)ka * a_sk]
                                                : __float2half(0.0f);
            int kr = e / BLOCK_TILE, cc = e % BLOCK_TILE;              // b_tile[kr][cc]
            int kb = k0 + kr, col = col0 + cc;
            b_tile[kr][cc] = (kb < K && col < N) ? B[(long long)kb * b_sk + (long long)col * b_sn]
                                                 : __float2half(0.0f);
        }
        __syncthreads();                                              // both tiles complete
        wmma::load_matrix_sync(a_frag, &a_tile[warp_row][0], FRAG);   // rows warp_row .. +16
        wmma::load_matrix_sync(b_frag, &b_tile[0][warp_col], BLOCK_TILE);   // columns warp_col .. +16
        wmma::mma_sync(acc, a_frag, b_frag, acc);                     // acc += a_frag b_frag
        __syncthreads();                                              // all warps done before the next copy
    }
    wmma::store_matrix_sync(c_tile + warp_row * BLOCK_TILE + warp_col, acc, BLOCK_TILE, wmma::mem_row_major);
    __syncthreads();                                                  // the whole tile stored
}

extern "C" __global__ void gemm_wmma_f32(float* __restrict__ c, const __half* __restrict__ a,
                                         const __half* __restrict__ b, int M, int N, int K,
                                         int a_sm, int a_sk, int b_sk, int b_sn,
                                         int a_sz, int b_sz, int c_sz)
{
    __shared__ __align__(32) float c_tile[BLOCK_TILE * BLOCK_TILE];
    const __half* A = a + (long long)blockIdx.z * a_sz;
    const __half* B = b + (long long)blockIdx.z * b_sz;
    int col0 = blockIdx.x * BLOCK_TILE;
    // Row tiles blockIdx.y, blockIdx.y + gridDim.y, ...: the bound depends on the block only, so
    // every thread reaches the same barriers and every warp the same wmma calls.
    for (int row0 = blockIdx.y * BLOCK_TILE; row0 < M; row0 += gridDim.y * BLOCK_TILE) {
        gemm_wmma_block(c_tile, A, B, row0, col0, M, N, K, a_sm, a_sk, b_sk, b_sn);
        for (int e = threadIdx.x; e < BLOCK_TILE * BLOCK_TILE; e += THREADS) {
            int row = row0 + e / BLOCK_TILE, col = col0 + e % BLOCK_TILE;
            if (row < M && col < N)
                c[(long long)blockIdx.z * c_sz + (long long)row * N + col] = c_tile[e];
        }
        __syncthreads();                                              // c_tile read before it is reused
    }
}

extern "C" __global__ void gemm_wmma_f16(__half* __restrict__ c, const __half* __restrict__ a,
                                         const __half* __restrict__ b, int M, int N, int K,
                                         int a_sm, int a_sk, int b_sk, int b_sn,
                                         int a_sz, int b_sz, int c_sz)
{
    __shared__ __align__(32) float c_tile[BLOCK_TILE * BLOCK_TILE];
    const __half* A = a + (long long)blockIdx.z * a_sz;
    const __half* B = b + (long long)blockIdx.z * b_sz;
    int col0 = blockIdx.x * BLOCK_TILE;
    for (int row0 = blockIdx.y * BLOCK_TILE; row0 < M; row0 += gridDim.y * BLOCK_TILE) {
        gemm_wmma_block(c_tile, A, B, row0, col0, M, N, K, a_sm, a_sk, b_sk, b_sn);
        for (int e = threadIdx.x; e < BLOCK_TILE * BLOCK_TILE; e += THREADS) {
            int row = row0 + e / BLOCK_TILE, col = col0 + e % BLOCK_TILE;
            if (row < M && col < N)                                   // the float sum, rounded once
                c[(long long)blockIdx.z * c_sz + (long long)row * N + col] = __float2half_rn(c_tile[e]);
        }
        __syncthreads();
    }
}
