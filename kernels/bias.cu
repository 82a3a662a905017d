/* bias.cu: add a per-channel bias, and its backward, the per-channel sum of dy.
 * Used by conv2d (y: N x C x HW) and linear (y: N x C, HW = 1); math in minialex/ops/conv.py.
 * NCHW (or N x C), C-contiguous float32.
 */

/* y[n, c, p] += b[c]; one thread per element of y (int indices: N*C*HW < 2^31, see kernels/README.md) */
extern "C" __global__ void bias_forward(float* __restrict__ y, const float* __restrict__ b,
                                        int N, int C, int HW)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C * HW) return;
    y[i] += b[(i / HW) % C];
}

#define BIAS_THREADS 256

/* db[c] = sum over n, p of dy[n, c, p]. One block per channel c: its threads walk the channel's
 * N*HW elements e = (n, p) in steps of BIAS_THREADS, then add their partial sums as a tree in
 * shared memory. */
extern "C" __global__ void bias_backward(float* __restrict__ db, const float* __restrict__ dy,
                                         int N, int C, int HW)
{
    __shared__ float partial[BIAS_THREADS];
    int c = blockIdx.x;
    int t = threadIdx.x;
    float sum = 0.0f;
    for (int e = t; e < N * HW; e += BIAS_THREADS) {
        int n = e / HW, p = e % HW;
        sum += dy[((long long)n * C + c) * HW + p];
    }
    partial[t] = sum;
    __syncthreads();
    for (int half = BIAS_THREADS / 2; half > 0; half /= 2) {
        if (t < half) partial[t] += partial[t + half];
        __syncthreads();
    }
    if (t == 0) db[c] = partial[0];
}
