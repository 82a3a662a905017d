/* gemm.cu: C = A @ B in float32, the classic tiled shared-memory SGEMM.
 *
 * The layouts it serves are in minialex/cuda.py `gemm` (conv2d and linear, forward and backward).
 * A is M x K, B is K x N, C is M x N row-major; A and B are read through strides (in elements), so a
 * transposed operand is just swapped strides. blockIdx.z picks a batch (conv2d's groups), each
 * with its own offsets a_sz, b_sz, c_sz.
 *
 * Thread mapping: a 16x16 block computes a 16x16 tile of C, one thread per element (and the tiles
 * gridDim.y rows further down, when C has more than 65535 row tiles). The K axis is
 * walked in 16-wide steps: the block copies a 16x16 tile of A and of B into shared memory (one element
 * per thread), waits (__syncthreads), multiplies the tiles, and waits again before overwriting them.
 * Each element of A and B is thus read from global memory N/16 and M/16 times instead of N and M.
 */
#define TILE 16

extern "C" __global__ void gemm_tiled(float* __restrict__ c, const float* __restrict__ a,
                                      const float* __restrict__ b, int M, int N, int K,
                                      int a_sm, int a_sk, int b_sk, int b_sn,
                                      int a_sz, int b_sz, int c_sz)
{
    __shared__ float a_tile[TILE][TILE];
    __shared__ float b_tile[TILE][TILE];
    int tx = threadIdx.x, ty = threadIdx.y;
    int col = blockIdx.x * TILE + tx;            // n
    const float* A = a + (long long)blockIdx.z * a_sz;
    const float* B = b + (long long)blockIdx.z * b_sz;

    // Row tiles blockIdx.y, blockIdx.y + gridDim.y, ... (grid y is capped at 65535). The bound
    // depends on the block only, so every thread of the block reaches the same barriers.
    for (int row0 = blockIdx.y * TILE; row0 < M; row0 += gridDim.y * TILE) {
        int row = row0 + ty;                     // m
        float acc = 0.0f;
        for (int k0 = 0; k0 < K; k0 += TILE) {
            int ka = k0 + tx, kb = k0 + ty;      // this thread loads A(row, ka) and B(kb, col)
            a_tile[ty][tx] = (row < M && ka < K) ? A[(long long)row * a_sm + (long long)ka * a_sk] : 0.0f;
            b_tile[ty][tx] = (kb < K && col < N) ? B[(long long)kb * b_sk + (long long)col * b_sn] : 0.0f;
            __syncthreads();                     // both tiles complete
            for (int kk = 0; kk < TILE; ++kk)
                acc += a_tile[ty][kk] * b_tile[kk][tx];
            __syncthreads();                     // everyone done before the next load
        }
        if (row < M && col < N)
            c[(long long)blockIdx.z * c_sz + (long long)row * N + col] = acc;
    }
}
