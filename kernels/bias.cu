/* bias.cu: add a per-channel bias, and its backward, the per-channel sum of dy.
 * Used by conv2d (y: N x C x HW) and linear (y: N x C, HW = 1); math in minialex/ops/conv.py.
 * NCHW (or N x C), C-contiguous float32. bias_forward_half serves float16 layers (the sum in
 * float, rounded once to half); their db is a product with a vector of ones through cuda.gemm,
 * which sums in float32 and rounds once (minialex/cuda_ops/conv.py and linear.py).
 */
#include <cuda_fp16.h>

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

/* ----- float16 ----- */

/* y = half(y_f + b): the product's float sum (cuda.gemm's float32 C) plus the bias, rounded once,
 * as the reference adds b before its one rounding. Thread i takes the pair (2i, 2i + 1): y_f read
 * as one float2, y written as one __half2 (both arrays fresh, so aligned); when the count is odd,
 * the thread past the last pair takes the last element. */
extern "C" __global__ void bias_forward_half(__half* __restrict__ y, const float* __restrict__ y_f,
                                             const __half* __restrict__ b, int N, int C, int HW)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;       // pair i: elements 2i and 2i + 1
    int count = N * C * HW;
    if (2 * i + 1 < count) {
        float2 v = ((const float2*)y_f)[i];
        ((__half2*)y)[i] = __floats2half2_rn(v.x + __half2float(b[(2 * i / HW) % C]),
                                             v.y + __half2float(b[((2 * i + 1) / HW) % C]));
    } else if (2 * i < count) {                          // the odd last element
        y[2 * i] = __float2half_rn(y_f[2 * i] + __half2float(b[(2 * i / HW) % C]));
    }
}
