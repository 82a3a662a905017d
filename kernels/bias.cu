/* bias.cu: add a per-channel bias, and its backward, the per-channel sum of dy.
 * Used by conv2d (y: N x C x HW) and linear (y: N x C, HW = 1); math in minialex/ops/conv.py.
 * NCHW (or N x C), C-contiguous float32.
 */

/* y[n, c, p] += b[c]; one thread per element of y */
extern "C" __global__ void bias_forward(float* __restrict__ y, const float* __restrict__ b,
                                        int N, int C, int HW)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)N * C * HW) return;
    int c = (i / HW) % C;
    y[i] += b[c];
}

/* db[c] = sum over n, p of dy[n, c, p]; one block of 256 threads per channel.
 * Each thread sums a strided share of the N*HW elements, then the block halves the partial sums
 * in shared memory (a tree: 256 -> 128 -> ... -> 1), waiting at each level. */
#define BIAS_THREADS 256

extern "C" __global__ void bias_backward(float* __restrict__ db, const float* __restrict__ dy,
                                         int N, int C, int HW)
{
    __shared__ float partial[BIAS_THREADS];
    int c = blockIdx.x;
    int t = threadIdx.x;
    float sum = 0.0f;
    for (long long j = t; j < (long long)N * HW; j += BIAS_THREADS) {
        long long n = j / HW, p = j % HW;
        sum += dy[(n * C + c) * HW + p];
    }
    partial[t] = sum;
    __syncthreads();
    for (int half = BIAS_THREADS / 2; half > 0; half /= 2) {
        if (t < half) partial[t] += partial[t + half];
        __syncthreads();
    }
    if (t == 0) db[c] = partial[0];
}
