/* pool.cu: max pooling with overlapping windows; math in minialex/ops/pool.py.
 * x, dx: N x C x H x W; y, dy, argmax: N x C x OH x OW (NCHW), C-contiguous; float32 (or float16:
 * the _half kernels), argmax int32.
 */
#include <cuda_fp16.h>

/* y = max over the KH x KW window; argmax = i*KW + j of the first maximum, as in PyTorch: the
 * first pixel inside the image is taken, then any larger one, then any NaN (a NaN window gives
 * NaN, its last NaN wins). Padding is never taken. One thread per output element. */
extern "C" __global__ void pool_forward(float* __restrict__ y, int* __restrict__ argmax,
                                        const float* __restrict__ x, int N, int C, int H, int W,
                                        int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;  // int: y has < 2^31 elements (cuda.blocks)
    if (idx >= N * C * OH * OW) return;
    int ow = idx % OW;
    int oh = (idx / OW) % OH;
    long long nc = idx / (OW * OH);              // n * C + c; x itself may pass 2^31 elements
    float best = 0.0f;
    int best_at = -1;                            // nothing taken yet
    for (int i = 0; i < KH; ++i) {
        int h = oh * SH - PH + i;
        if (h < 0 || h >= H) continue;
        for (int j = 0; j < KW; ++j) {
            int w = ow * SW - PW + j;
            if (w < 0 || w >= W) continue;
            float v = x[(nc * H + h) * W + w];
            if (best_at < 0 || v > best || isnan(v)) { best = v; best_at = i * KW + j; }  // ties keep the first
        }
    }
    y[idx] = best;
    argmax[idx] = best_at;
}

/* dx[n, c, h, w] = sum of dy over the windows whose winner was this pixel (a gather: one thread
 * per input pixel, no atomics). Window oh covers rows oh*SH - PH .. oh*SH - PH + KH - 1. */
extern "C" __global__ void pool_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                         const int* __restrict__ argmax, int N, int C, int H, int W,
                                         int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;  // int: dx has < 2^31 elements (cuda.blocks)
    if (idx >= N * C * H * W) return;
    int w = idx % W;
    int h = (idx / W) % H;
    int nc = idx / (W * H);
    int hp = h + PH, wp = w + PW;                 // position in the padded image
    int oh_lo = hp - KH + 1 > 0 ? (hp - KH + 1 + SH - 1) / SH : 0, oh_hi = min(OH - 1, hp / SH);
    int ow_lo = wp - KW + 1 > 0 ? (wp - KW + 1 + SW - 1) / SW : 0, ow_hi = min(OW - 1, wp / SW);
    float sum = 0.0f;
    for (int oh = oh_lo; oh <= oh_hi; ++oh)
        for (int ow = ow_lo; ow <= ow_hi; ++ow) {
            int o = (nc * OH + oh) * OW + ow;
            if (argmax[o] == (hp - oh * SH) * KW + (wp - ow * SW)) sum += dy[o];
        }
    dx[idx] = sum;
}

/* ----- float16: the same, in half (the max is a select: exact) ----- */

/* pool_forward on halves: the same scan, the same first / larger / NaN rule (__hgt is false for NaN) */
extern "C" __global__ void pool_forward_half(__half* __restrict__ y, int* __restrict__ argmax,
                                             const __half* __restrict__ x, int N, int C, int H, int W,
                                             int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * C * OH * OW) return;
    int ow = idx % OW;
    int oh = (idx / OW) % OH;
    long long nc = idx / (OW * OH);
    __half best = __float2half(0.0f);
    int best_at = -1;
    for (int i = 0; i < KH; ++i) {
        int h = oh * SH - PH + i;
        if (h < 0 || h >= H) continue;
        for (int j = 0; j < KW; ++j) {
            int w = ow * SW - PW + j;
            if (w < 0 || w >= W) continue;
            __half v = x[(nc * H + h) * W + w];
            if (best_at < 0 || __hgt(v, best) || __hisnan(v)) { best = v; best_at = i * KW + j; }
        }
    }
    y[idx] = best;
    argmax[idx] = best_at;
}

/* pool_backward on halves, summed in half as the reference does (each addition rounded once) and in
 * its order: window offsets (i, j) ascending, that is windows oh, then ow, descending. */
extern "C" __global__ void pool_backward_half(__half* __restrict__ dx, const __half* __restrict__ dy,
                                              const int* __restrict__ argmax, int N, int C, int H, int W,
                                              int KH, int KW, int SH, int SW, int PH, int PW, int OH, int OW)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * C * H * W) return;
    int w = idx % W;
    int h = (idx / W) % H;
    int nc = idx / (W * H);
    int hp = h + PH, wp = w + PW;
    int oh_lo = hp - KH + 1 > 0 ? (hp - KH + 1 + SH - 1) / SH : 0, oh_hi = min(OH - 1, hp / SH);
    int ow_lo = wp - KW + 1 > 0 ? (wp - KW + 1 + SW - 1) / SW : 0, ow_hi = min(OW - 1, wp / SW);
    __half sum = __float2half(0.0f);
    for (int oh = oh_hi; oh >= oh_lo; --oh)              // i = hp - oh*SH ascending
        for (int ow = ow_hi; ow >= ow_lo; --ow) {        // j = wp - ow*SW ascending
            int o = (nc * OH + oh) * OW + ow;
            if (argmax[o] == (hp - oh * SH) * KW + (wp - ow * SW)) sum = __hadd(sum, dy[o]);
        }
    dx[idx] = sum;
}
