/* conv.cu: im2col, col2im and an axis swap for conv2d; math in minialex/ops/conv.py.
 * x, dx: N x C x H x W (NCHW); cols, dcols: (C*KH*KW) x (N*OH*OW), rows (c, i, j), columns
 * (n, oh, ow), so that one GEMM per group covers the whole batch. C-contiguous float32.
 * The matrix products go through minialex.cuda.gemm (kernels/gemm.cu or cuBLAS), the bias
 * through kernels/bias.cu.
 * float16 layers (the _half kernels): x, cols, dy and dx are half; the products' sums come from
 * cuda.gemm as float, and col2im sums in float, each result rounded once (as the reference).
 */
#include <cuda_fp16.h>

/* cols[(c, i, j), (n, oh, ow)] = x[n, c, oh*SH - PH + i, ow*SW - PW + j], 0 outside the image.
 * Grid: x gives each thread one column (n, oh, ow); y strides over the C channels. A thread decodes
 * its column once, then copies the KH*KW rows (c, i, j) of its channel with no division per element
 * (divisions cost more than the copy on a GPU); neighbouring threads write neighbouring addresses. */
extern "C" __global__ void conv_im2col(float* __restrict__ cols, const float* __restrict__ x,
                                       int N, int C, int H, int W, int KH, int KW,
                                       int SH, int SW, int PH, int PW, int OH, int OW)
{
    int columns = N * OH * OW;
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= columns) return;
    int ow = col % OW;
    int oh = (col / OW) % OH;
    int n = col / (OW * OH);
    int h0 = oh * SH - PH, w0 = ow * SW - PW;                      // the window's corner in x
    for (int c = blockIdx.y; c < C; c += gridDim.y) {
        const float* plane = x + ((long long)n * C + c) * H * W;
        float* out = cols + (long long)c * KH * KW * columns + col;  // row (c, 0, 0)
        for (int i = 0; i < KH; ++i) {
            int h = h0 + i;
            for (int j = 0; j < KW; ++j, out += columns) {          // next row (c, i, j + 1)
                int w = w0 + j;
                *out = (h >= 0 && h < H && w >= 0 && w < W) ? plane[h * W + w] : 0.0f;
            }
        }
    }
}

/* The adjoint, as a gather: dx[n, c, h, w] = sum of dcols[(c, i, j), (n, oh, ow)] over every
 * window (oh, ow) and offset (i, j) that copied this pixel: oh*SH - PH + i == h, ow*SW - PW + j == w.
 * Grid: x gives each thread one pixel (h, w) of an image plane; y strides over the N*C planes.
 * The windows holding the pixel are oh in [oh_lo, oh_hi] (then i = h + PH - oh*SH), likewise ow:
 * found once, with no division per offset. Each thread writes only its own element, so no atomics,
 * and the sum runs over i, then j, ascending: a fixed order (deterministic). */
extern "C" __global__ void conv_col2im(float* __restrict__ dx, const float* __restrict__ dcols,
                                       int N, int C, int H, int W, int KH, int KW,
                                       int SH, int SW, int PH, int PW, int OH, int OW)
{
    int pixel = blockIdx.x * blockDim.x + threadIdx.x;
    if (pixel >= H * W) return;
    int hp = pixel / W + PH, wp = pixel % W + PW;      // position in the padded image
    int oh_lo = hp - KH + 1 > 0 ? (hp - KH + 1 + SH - 1) / SH : 0, oh_hi = min(OH - 1, hp / SH);
    int ow_lo = wp - KW + 1 > 0 ? (wp - KW + 1 + SW - 1) / SW : 0, ow_hi = min(OW - 1, wp / SW);
    long long columns = (long long)N * OH * OW;
    for (int plane = blockIdx.y; plane < N * C; plane += gridDim.y) {
        int n = plane / C, c = plane % C;
        float sum = 0.0f;
        for (int oh = oh_hi; oh >= oh_lo; --oh) {       // i = hp - oh*SH ascending
            const float* rows = dcols + ((long long)c * KH + (hp - oh * SH)) * KW * columns
                                      + ((long long)n * OH + oh) * OW;
            for (int ow = ow_hi; ow >= ow_lo; --ow)     // j = wp - ow*SW ascending
                sum += rows[(wp - ow * SW) * columns + ow];
        }
        dx[(long long)plane * H * W + pixel] = sum;
    }
}

/* out[b, a, l] = in[a, b, l]: (A, B, L) -> (B, A, L). The GEMM gives y as (O, N, OH*OW); this
 * makes it NCHW (and turns dy into (O, N, OH*OW) for the backward). Grid: x over l, y strides over
 * the A*B planes of out, so each block copies whole rows (coalesced, one division per row). */
extern "C" __global__ void conv_swap_axes(float* __restrict__ out, const float* __restrict__ in,
                                          int A, int B, int L)
{
    int l = blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= L) return;
    for (int plane = blockIdx.y; plane < A * B; plane += gridDim.y) {   // plane = b * A + a
        int a = plane % A, b = plane / A;
        out[(long long)plane * L + l] = in[((long long)a * B + b) * L + l];
    }
}

/* ----- float16 ----- */

/* conv_im2col on halves: a copy, exact */
extern "C" __global__ void conv_im2col_half(__half* __restrict__ cols, const __half* __restrict__ x,
                                            int N, int C, int H, int W, int KH, int KW,
                                            int SH, int SW, int PH, int PW, int OH, int OW)
{
    int columns = N * OH * OW;
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= columns) return;
    int ow = col % OW;
    int oh = (col / OW) % OH;
    int n = col / (OW * OH);
    int h0 = oh * SH - PH, w0 = ow * SW - PW;
    for (int c = blockIdx.y; c < C; c += gridDim.y) {
        const __half* plane = x + ((long long)n * C + c) * H * W;
        __half* out = cols + (long long)c * KH * KW * columns + col;
        for (int i = 0; i < KH; ++i) {
            int h = h0 + i;
            for (int j = 0; j < KW; ++j, out += columns) {
                int w = w0 + j;
                *out = (h >= 0 && h < H && w >= 0 && w < W) ? plane[h * W + w] : __float2half(0.0f);
            }
        }
    }
}

/* conv_col2im from float dcols (cuda.gemm's float32 C) to half dx: the same gather and order, the
 * sum in float, rounded once */
extern "C" __global__ void conv_col2im_half(__half* __restrict__ dx, const float* __restrict__ dcols,
                                            int N, int C, int H, int W, int KH, int KW,
                                            int SH, int SW, int PH, int PW, int OH, int OW)
{
    int pixel = blockIdx.x * blockDim.x + threadIdx.x;
    if (pixel >= H * W) return;
    int hp = pixel / W + PH, wp = pixel % W + PW;
    int oh_lo = hp - KH + 1 > 0 ? (hp - KH + 1 + SH - 1) / SH : 0, oh_hi = min(OH - 1, hp / SH);
    int ow_lo = wp - KW + 1 > 0 ? (wp - KW + 1 + SW - 1) / SW : 0, ow_hi = min(OW - 1, wp / SW);
    long long columns = (long long)N * OH * OW;
    for (int plane = blockIdx.y; plane < N * C; plane += gridDim.y) {
        int n = plane / C, c = plane % C;
        float sum = 0.0f;
        for (int oh = oh_hi; oh >= oh_lo; --oh) {
            const float* rows = dcols + ((long long)c * KH + (hp - oh * SH)) * KW * columns
                                      + ((long long)n * OH + oh) * OW;
            for (int ow = ow_hi; ow >= ow_lo; --ow)
                sum += rows[(wp - ow * SW) * columns + ow];
        }
        dx[(long long)plane * H * W + pixel] = __float2half_rn(sum);
    }
}

/* conv_swap_axes on halves (dy to (O, N, OH*OW) for the backward): a copy */
extern "C" __global__ void conv_swap_axes_half(__half* __restrict__ out, const __half* __restrict__ in,
                                               int A, int B, int L)
{
    int l = blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= L) return;
    for (int plane = blockIdx.y; plane < A * B; plane += gridDim.y) {
        int a = plane % A, b = plane / A;
        out[(long long)plane * L + l] = in[((long long)a * B + b) * L + l];
    }
}

/* The forward's last step for half layers: out[b, a, l] = half(in[a, b, l] + bias[a]), the
 * products' float sums (O, N, OH*OW) made NCHW with the bias added in float and rounded once (the
 * reference adds b before its one rounding). */
extern "C" __global__ void conv_swap_axes_bias_half(__half* __restrict__ out, const float* __restrict__ in,
                                                    const __half* __restrict__ bias, int A, int B, int L)
{
    int l = blockIdx.x * blockDim.x + threadIdx.x;
    if (l >= L) return;
    for (int plane = blockIdx.y; plane < A * B; plane += gridDim.y) {
        int a = plane % A, b = plane / A;
        out[(long long)plane * L + l] = __float2half_rn(in[((long long)a * B + b) * L + l] + __half2float(bias[a]));
    }
}
