/* conv.cu: im2col, col2im and an axis swap for conv2d; math in minialex/ops/conv.py.
 * x, dx: N x C x H x W (NCHW); cols, dcols: (C*KH*KW) x (N*OH*OW), rows (c, i, j), columns
 * (n, oh, ow), so that one GEMM per group covers the whole batch. C-contiguous float32.
 * The matrix products go through minialex.cuda.gemm (kernels/gemm.cu or cuBLAS), the bias
 * through kernels/bias.cu.
 */

/* cols[(c, i, j), (n, oh, ow)] = x[n, c, oh*SH - PH + i, ow*SW - PW + j], 0 outside the image.
 * One thread per element of cols. */
extern "C" __global__ void conv_im2col(float* __restrict__ cols, const float* __restrict__ x,
                                       int N, int C, int H, int W, int KH, int KW,
                                       int SH, int SW, int PH, int PW, int OH, int OW)
{
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)C * KH * KW * N * OH * OW) return;
    int ow = idx % OW;
    int oh = (idx / OW) % OH;
    int n = (idx / ((long long)OW * OH)) % N;
    int j = (idx / ((long long)OW * OH * N)) % KW;
    int i = (idx / ((long long)OW * OH * N * KW)) % KH;
    int c = idx / ((long long)OW * OH * N * KW * KH);
    int h = oh * SH - PH + i;
    int w = ow * SW - PW + j;
    cols[idx] = (h >= 0 && h < H && w >= 0 && w < W) ? x[(((long long)n * C + c) * H + h) * W + w] : 0.0f;
}

/* The adjoint, as a gather: dx[n, c, h, w] = sum of dcols[(c, i, j), (n, oh, ow)] over every
 * window (oh, ow) and offset (i, j) that copied this pixel: oh*SH - PH + i == h, ow*SW - PW + j == w.
 * One thread per input pixel; it writes only its own element, so no atomics and the order of the
 * sum is fixed (deterministic). */
extern "C" __global__ void conv_col2im(float* __restrict__ dx, const float* __restrict__ dcols,
                                       int N, int C, int H, int W, int KH, int KW,
                                       int SH, int SW, int PH, int PW, int OH, int OW)
{
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)N * C * H * W) return;
    int w = idx % W;
    int h = (idx / W) % H;
    int c = (idx / ((long long)W * H)) % C;
    int n = idx / ((long long)W * H * C);
    long long columns = (long long)N * OH * OW;
    float sum = 0.0f;
    for (int i = 0; i < KH; ++i) {
        int hp = h + PH - i;                     // = oh * SH for the window that used offset i
        if (hp < 0 || hp % SH != 0 || hp / SH >= OH) continue;
        int oh = hp / SH;
        for (int j = 0; j < KW; ++j) {
            int wp = w + PW - j;
            if (wp < 0 || wp % SW != 0 || wp / SW >= OW) continue;
            int ow = wp / SW;
            long long row = ((long long)c * KH + i) * KW + j;
            sum += dcols[row * columns + ((long long)n * OH + oh) * OW + ow];
        }
    }
    dx[idx] = sum;
}

/* out[b, a, l] = in[a, b, l]: (A, B, L) -> (B, A, L). The GEMM gives y as (O, N, OH*OW); this
 * makes it NCHW (and turns dy into (O, N, OH*OW) for the backward). One thread per element. */
extern "C" __global__ void conv_swap01(float* __restrict__ out, const float* __restrict__ in,
                                       int A, int B, int L)
{
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)A * B * L) return;
    int l = idx % L;
    int a = (idx / L) % A;
    int b = idx / ((long long)L * A);
    out[idx] = in[((long long)a * B + b) * L + l];
}
