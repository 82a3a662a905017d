/* lrn.cu: local response normalization across channels (the paper's formula, alpha not divided
 * by size); math and backward derivation in minialex/ops/lrn.py.
 * x, y, scale, dy, dx: N x C x HW (NCHW), C-contiguous float32. One thread per element; int
 * indices (N*C*HW < 2^31, checked by minialex.cuda.blocks): 32-bit division is fast on a GPU.
 * The window of channel c is c - size/2 .. c + (size-1)/2, clipped to 0 .. C-1.
 * The _half kernels take float16 x, dy and give float16 y, dx, computing in float as the float32
 * kernels do (a^2 overflows a half above 256; a half sum of small squares would lose them) and
 * rounding once; y (before rounding) and scale are kept in float for the backward.
 */
#include <cuda_fp16.h>

/* scale = k + alpha * sum_{j in window(c)} x[j]^2;  y = x * scale^-beta (scale kept for backward) */
extern "C" __global__ void lrn_forward(float* __restrict__ y, float* __restrict__ scale,
                                       const float* __restrict__ x, int N, int C, int HW,
                                       int size, float alpha, float beta, float k)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * C * HW) return;
    int p = idx % HW;
    int c = (idx / HW) % C;
    int n = idx / (HW * C);
    int lo = max(0, c - size / 2), hi = min(C - 1, c + (size - 1) / 2);
    float sum = 0.0f;
    for (int j = lo; j <= hi; ++j) {
        float a = x[(n * C + j) * HW + p];
        sum += a * a;
    }
    float s = k + alpha * sum;
    scale[idx] = s;
    y[idx] = x[idx] * powf(s, -beta);
}

/* dx[m] = dy[m] * s[m]^-beta - 2 alpha beta x[m] * sum_{c : m in window(c)} dy[c] y[c] / s[c]
 * The channels c whose window holds m are m - (size-1)/2 .. m + size/2 (the mirrored window). */
extern "C" __global__ void lrn_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                        const float* __restrict__ x, const float* __restrict__ y,
                                        const float* __restrict__ scale, int N, int C, int HW,
                                        int size, float alpha, float beta)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * C * HW) return;
    int p = idx % HW;
    int m = (idx / HW) % C;
    int n = idx / (HW * C);
    int lo = max(0, m - (size - 1) / 2), hi = min(C - 1, m + size / 2);
    float sum = 0.0f;
    for (int c = lo; c <= hi; ++c) {
        int e = (n * C + c) * HW + p;
        sum += dy[e] * y[e] / scale[e];
    }
    dx[idx] = dy[idx] * powf(scale[idx], -beta) - 2.0f * alpha * beta * x[idx] * sum;
}

/* ----- float16 x, y, dy, dx; everything between in float ----- */

/* lrn_forward with half x: y = half(x * s^-beta), rounded once; y_f (the float y) and scale kept */
extern "C" __global__ void lrn_forward_half(__half* __restrict__ y, float* __restrict__ y_f, float* __restrict__ scale,
                                            const __half* __restrict__ x, int N, int C, int HW,
                                            int size, float alpha, float beta, float k)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * C * HW) return;
    int p = idx % HW;
    int c = (idx / HW) % C;
    int n = idx / (HW * C);
    int lo = max(0, c - size / 2), hi = min(C - 1, c + (size - 1) / 2);
    float sum = 0.0f;
    for (int j = lo; j <= hi; ++j) {
        float a = __half2float(x[(n * C + j) * HW + p]);
        sum += a * a;                                    // exact: a half squared fits a float
    }
    float s = k + alpha * sum;
    scale[idx] = s;
    y_f[idx] = __half2float(x[idx]) * powf(s, -beta);
    y[idx] = __float2half_rn(y_f[idx]);
}

/* lrn_backward with half dy, x and float y_f, scale; dx rounded once. two_alpha_beta = 2 * alpha *
 * beta, as the reference rounds it (a double product, then float) */
extern "C" __global__ void lrn_backward_half(__half* __restrict__ dx, const __half* __restrict__ dy,
                                             const __half* __restrict__ x, const float* __restrict__ y_f,
                                             const float* __restrict__ scale, int N, int C, int HW,
                                             int size, float beta, float two_alpha_beta)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * C * HW) return;
    int p = idx % HW;
    int m = (idx / HW) % C;
    int n = idx / (HW * C);
    int lo = max(0, m - (size - 1) / 2), hi = min(C - 1, m + size / 2);
    float sum = 0.0f;
    for (int c = lo; c <= hi; ++c) {
        int e = (n * C + c) * HW + p;
        sum += __half2float(dy[e]) * y_f[e] / scale[e];
    }
    dx[idx] = __float2half_rn(__half2float(dy[idx]) * powf(scale[idx], -beta)
                              - two_alpha_beta * __half2float(x[idx]) * sum);
}
