/* conv.cu: im2col and col2im for conv2d; math in minialex/ops/conv.py.
 * x: N x C x H x W (NCHW), cols: N x (C*KH*KW) x (OH*OW), C-contiguous float32.
 * The matrix products themselves go through minialex.cuda.gemm (kernels/gemm.cu or cuBLAS),
 * the bias through kernels/bias.cu.
 */

/* cols[n, (c, i, j), (oh, ow)] = x[n, c, oh*SH - PH + i, ow*SW - PW + j], 0 outside the image.
 * One thread per element of cols. */
extern "C" __global__ void conv_im2col(float* __restrict__ cols, const float* __restrict__ x,
                                       int N, int C, int H, int W, int KH, int KW,
                                       int SH, int SW, int PH, int PW, int OH, int OW)
{
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)N * C * KH * KW * OH * OW) return;
    int ow = idx % OW;
    int oh = (idx / OW) % OH;
    int j = (idx / ((long long)OW * OH)) % KW;
    int i = (idx / ((long long)OW * OH * KW)) % KH;
    int c = (idx / ((long long)OW * OH * KW * KH)) % C;
    long long n = idx / ((long long)OW * OH * KW * KH * C);
    int h = oh * SH - PH + i;
    int w = ow * SW - PW + j;
    cols[idx] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : 0.0f;
}

/* The adjoint, as a gather: dx[n, c, h, w] = sum of dcols[n, (c, i, j), (oh, ow)] over every
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
    long long n = idx / ((long long)W * H * C);
    float sum = 0.0f;
    for (int i = 0; i < KH; ++i) {
        int hp = h + PH - i;                     // = oh * SH for the window that used offset i
        if (hp < 0 || hp % SH != 0 || hp / SH >= OH) continue;
        int oh = hp / SH;
        for (int j = 0; j < KW; ++j) {
            int wp = w + PW - j;
            if (wp < 0 || wp % SW != 0 || wp / SW >= OW) continue;
            int ow = wp / SW;
            sum += dcols[(((n * C + c) * KH + i) * KW + j) * (long long)(OH * OW) + oh * OW + ow];
        }
    }
    dx[idx] = sum;
}
