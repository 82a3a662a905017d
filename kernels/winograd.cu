/* winograd.cu: conv2d by Winograd's minimal filtering F(MH x MW, KH x KW), stride 1: the tile
 * transforms, their adjoints, and the non-finite fix-ups. Math and the NumPy reference:
 * minialex/ops/winograd.py; launch code: minialex/cuda_ops/winograd.py.
 *
 * x, dx: N x C x H x W; w, dw: O x C/G x KH x KW; y, dy: N x O x OH x OW (NCHW, C-contiguous float32).
 * A tile is AH x AW = (MH + KH - 1) x (MW + KW - 1) input pixels, AH, AW <= WINOGRAD_MAX_A; its
 * positions p = (xi, nu) row-major, AA = AH*AW of them. Tiles t = (n, ty, tx), T = N*TH*TW of them.
 *     V, dV, dD  AA x C x T       transformed input tiles (and their gradients)
 *     U, dU      AA x O x C/G     transformed filters
 *     M, dM      AA x O x T       U @ V per position and group (minialex.cuda.gemm, batched)
 * The 1-D matrices of each axis (AT: M x A, G: A x R, BT: A x A, row-major) come as small float32
 * arrays: ath, atw, gh, gw, bth, btw.
 *
 * Thread mapping: the tile transforms give each thread one tile (grid x) and stride over the
 * channels or filters (grid y, as cuda.planes); the filter transforms one thread per filter (o, c);
 * the gather of dx and the fix-ups one thread per output element. A tile lives in a thread's local
 * array. Every thread writes only its own elements: no atomics, deterministic.
 */
#define WINOGRAD_MAX_A 8

/* out (P x Q) = A @ in @ B^T, in (I x J). A(p, i) = a[p*a_p + i*a_i], B(q, j) = b[q*b_q + j*b_j]:
 * the strides pick a matrix (a_p = I, a_i = 1) or its transpose (a_p = 1, a_i = P), so the same
 * code applies BT @ D @ BT^T and its adjoint BT^T @ dV @ BT. */
__device__ void winograd_sandwich(float out[][WINOGRAD_MAX_A], float in[][WINOGRAD_MAX_A],
                                  const float* a, int a_p, int a_i, int P, int I,
                                  const float* b, int b_q, int b_j, int Q, int J)
{
    float left[WINOGRAD_MAX_A][WINOGRAD_MAX_A];          // A @ in (P x J)
    for (int p = 0; p < P; ++p)
        for (int j = 0; j < J; ++j) {
            float s = 0.0f;
            for (int i = 0; i < I; ++i) s += a[p * a_p + i * a_i] * in[i][j];
            left[p][j] = s;
        }
    for (int p = 0; p < P; ++p)
        for (int q = 0; q < Q; ++q) {
            float s = 0.0f;
            for (int j = 0; j < J; ++j) s += left[p][j] * b[q * b_q + j * b_j];
            out[p][q] = s;
        }
}

/* V[p, c, t] = (BTh @ D @ BTw^T)[p], D = the AH x AW input pixels of tile t = (n, ty, tx) from
 * row ty*MH - PH and column tx*MW - PW of x[n, c]: zeros outside x (the padding, and past the
 * last whole tile), read on the fly, so no padded copy of x is made. */
extern "C" __global__ void winograd_input(float* __restrict__ v, const float* __restrict__ x,
                                          const float* __restrict__ bth, const float* __restrict__ btw,
                                          int N, int C, int H, int W, int PH, int PW,
                                          int MH, int MW, int AH, int AW, int TH, int TW)
{
    int T = N * TH * TW;
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    int tx = t % TW;
    int ty = (t / TW) % TH;
    int n = t / (TW * TH);
    int h0 = ty * MH - PH, w0 = tx * MW - PW;             // the tile's corner in x (may be outside)
    float d[WINOGRAD_MAX_A][WINOGRAD_MAX_A], vt[WINOGRAD_MAX_A][WINOGRAD_MAX_A];
    for (int c = blockIdx.y; c < C; c += gridDim.y) {
        const float* plane = x + (n * C + c) * H * W;
        for (int i = 0; i < AH; ++i)
            for (int j = 0; j < AW; ++j) {
                int h = h0 + i, w = w0 + j;
                d[i][j] = (h >= 0 && h < H && w >= 0 && w < W) ? plane[h * W + w] : 0.0f;
            }
        winograd_sandwich(vt, d, bth, AH, 1, AH, AH, btw, AW, 1, AW, AW);       // BTh @ D @ BTw^T
        for (int p = 0; p < AH * AW; ++p)
            v[(p * C + c) * T + t] = vt[p / AW][p % AW];
    }
}

/* U[p, f] = (Gh @ w[f] @ Gw^T)[p] for every filter f = (o, c) of the F = O*C/G. */
extern "C" __global__ void winograd_filter(float* __restrict__ u, const float* __restrict__ w,
                                           const float* __restrict__ gh, const float* __restrict__ gw,
                                           int F, int KH, int KW, int AH, int AW)
{
    int f = blockIdx.x * blockDim.x + threadIdx.x;
    if (f >= F) return;
    float g[WINOGRAD_MAX_A][WINOGRAD_MAX_A], ut[WINOGRAD_MAX_A][WINOGRAD_MAX_A];
    for (int k = 0; k < KH; ++k)
        for (int l = 0; l < KW; ++l)
            g[k][l] = w[(f * KH + k) * KW + l];
    winograd_sandwich(ut, g, gh, KH, 1, AH, KH, gw, KW, 1, AW, KW);             // Gh @ w @ Gw^T
    for (int p = 0; p < AH * AW; ++p)
        u[p * F + f] = ut[p / AW][p % AW];
}

/* y[n, o, ty*MH + i, tx*MW + j] = (ATh @ M[:, o, t] @ ATw^T)[i, j] + b[o], the tile's outputs past
 * OH or OW cut off. */
extern "C" __global__ void winograd_output(float* __restrict__ y, const float* __restrict__ m,
                                           const float* __restrict__ b, const float* __restrict__ ath,
                                           const float* __restrict__ atw, int N, int O, int OH, int OW,
                                           int MH, int MW, int AH, int AW, int TH, int TW)
{
    int T = N * TH * TW;
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    int tx = t % TW;
    int ty = (t / TW) % TH;
    int n = t / (TW * TH);
    float mt[WINOGRAD_MAX_A][WINOGRAD_MAX_A], yt[WINOGRAD_MAX_A][WINOGRAD_MAX_A];
    for (int o = blockIdx.y; o < O; o += gridDim.y) {
        for (int p = 0; p < AH * AW; ++p)
            mt[p / AW][p % AW] = m[(p * O + o) * T + t];
        winograd_sandwich(yt, mt, ath, AH, 1, MH, AH, atw, AW, 1, MW, AW);      // ATh @ M @ ATw^T
        for (int i = 0; i < MH && ty * MH + i < OH; ++i)
            for (int j = 0; j < MW && tx * MW + j < OW; ++j)
                y[((n * O + o) * OH + ty * MH + i) * OW + tx * MW + j] = yt[i][j] + b[o];
    }
}

/* The adjoint of winograd_output: dM[p, o, t] = (ATh^T @ dY @ ATw)[p], dY the MH x MW tile of
 * dy[n, o] at (ty*MH, tx*MW), zeros past OH or OW (those outputs were cut off). */
extern "C" __global__ void winograd_output_adjoint(float* __restrict__ dm, const float* __restrict__ dy,
                                                   const float* __restrict__ ath, const float* __restrict__ atw,
                                                   int N, int O, int OH, int OW,
                                                   int MH, int MW, int AH, int AW, int TH, int TW)
{
    int T = N * TH * TW;
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    int tx = t % TW;
    int ty = (t / TW) % TH;
    int n = t / (TW * TH);
    float dyt[WINOGRAD_MAX_A][WINOGRAD_MAX_A], dmt[WINOGRAD_MAX_A][WINOGRAD_MAX_A];
    for (int o = blockIdx.y; o < O; o += gridDim.y) {
        for (int i = 0; i < MH; ++i)
            for (int j = 0; j < MW; ++j) {
                int oh = ty * MH + i, ow = tx * MW + j;
                dyt[i][j] = (oh < OH && ow < OW) ? dy[((n * O + o) * OH + oh) * OW + ow] : 0.0f;
            }
        winograd_sandwich(dmt, dyt, ath, 1, AH, AH, MH, atw, 1, AW, AW, MW);    // ATh^T @ dY @ ATw
        for (int p = 0; p < AH * AW; ++p)
            dm[(p * O + o) * T + t] = dmt[p / AW][p % AW];
    }
}

/* The adjoint of winograd_filter, summed over the `chunks` partial dU of the batch's image chunks:
 * dw[f] = Gh^T @ (sum over k of dU[k, :, f]) @ Gw. */
extern "C" __global__ void winograd_filter_adjoint(float* __restrict__ dw, const float* __restrict__ du,
                                                   const float* __restrict__ gh, const float* __restrict__ gw,
                                                   int F, int KH, int KW, int AH, int AW, int chunks)
{
    int f = blockIdx.x * blockDim.x + threadIdx.x;
    if (f >= F) return;
    float dut[WINOGRAD_MAX_A][WINOGRAD_MAX_A], g[WINOGRAD_MAX_A][WINOGRAD_MAX_A];
    for (int p = 0; p < AH * AW; ++p) {
        float s = 0.0f;
        for (int k = 0; k < chunks; ++k) s += du[(k * AH * AW + p) * F + f];
        dut[p / AW][p % AW] = s;
    }
    winograd_sandwich(g, dut, gh, 1, KH, KH, AH, gw, 1, KW, KW, AW);            // Gh^T @ dU @ Gw
    for (int k = 0; k < KH; ++k)
        for (int l = 0; l < KW; ++l)
            dw[(f * KH + k) * KW + l] = g[k][l];
}

/* The adjoint of the transform in winograd_input, tile by tile: dD[p, c, t] = (BTh^T @ dV @ BTw)[p]
 * (winograd_gather_dx then adds the overlapping tiles' pixels up). */
extern "C" __global__ void winograd_input_adjoint(float* __restrict__ dd, const float* __restrict__ dv,
                                                  const float* __restrict__ bth, const float* __restrict__ btw,
                                                  int C, int T, int AH, int AW)
{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    float dvt[WINOGRAD_MAX_A][WINOGRAD_MAX_A], ddt[WINOGRAD_MAX_A][WINOGRAD_MAX_A];
    for (int c = blockIdx.y; c < C; c += gridDim.y) {
        for (int p = 0; p < AH * AW; ++p)
            dvt[p / AW][p % AW] = dv[(p * C + c) * T + t];
        winograd_sandwich(ddt, dvt, bth, 1, AH, AH, AH, btw, 1, AW, AW, AW);    // BTh^T @ dV @ BTw
        for (int p = 0; p < AH * AW; ++p)
            dd[(p * C + c) * T + t] = ddt[p / AW][p % AW];
    }
}

/* dx[n, c, h, w] = sum of dD[(i, j), c, (n, ty, tx)] over the tiles that read this pixel: in the
 * padded image (hp, wp) = (h + PH, w + PW), tile ty covers rows ty*MH .. ty*MH + AH - 1, so
 * ty in [ty_lo, ty_hi] with i = hp - ty*MH (likewise tx, j): at most ceil(AH / MH) tiles per axis.
 * Grid: x gives each thread one pixel of a plane, y strides over the N*C planes (as conv_col2im).
 * The sum runs in a fixed order (i, then j, ascending): deterministic. */
extern "C" __global__ void winograd_gather_dx(float* __restrict__ dx, const float* __restrict__ dd,
                                              int N, int C, int H, int W, int PH, int PW,
                                              int MH, int MW, int AH, int AW, int TH, int TW)
{
    int pixel = blockIdx.x * blockDim.x + threadIdx.x;
    if (pixel >= H * W) return;
    int hp = pixel / W + PH, wp = pixel % W + PW;
    int ty_lo = hp - AH + 1 > 0 ? (hp - AH + MH) / MH : 0, ty_hi = min(TH - 1, hp / MH);
    int tx_lo = wp - AW + 1 > 0 ? (wp - AW + MW) / MW : 0, tx_hi = min(TW - 1, wp / MW);
    int T = N * TH * TW;
    for (int plane = blockIdx.y; plane < N * C; plane += gridDim.y) {
        int n = plane / C, c = plane % C;
        float sum = 0.0f;
        for (int ty = ty_hi; ty >= ty_lo; --ty) {          // i = hp - ty*MH ascending
            int i = hp - ty * MH;
            for (int tx = tx_hi; tx >= tx_lo; --tx) {      // j = wp - tx*MW ascending
                int j = wp - tx * MW;
                sum += dd[((i * AW + j) * C + c) * T + (n * TH + ty) * TW + tx];
            }
        }
        dx[plane * H * W + pixel] = sum;
    }
}

/* ----- the non-finite fix-ups: where a Winograd result is not finite (one inf in a tile spreads
 * to the whole tile), the direct convolution's value instead, as im2col computes it: the same
 * products (the zero padding included, so inf * 0 gives NaN there too), summed in another order.
 * One thread per element; only a thread whose element is not finite does any work. */

/* y[n, o, oh, ow] = sum over c, k, l of w[o, c, k, l] * x[n, g*C/G + c, oh + k - PH, ow + l - PW] + b[o] */
extern "C" __global__ void winograd_fixup_y(float* __restrict__ y, const float* __restrict__ x,
                                            const float* __restrict__ w, const float* __restrict__ b,
                                            int N, int C, int H, int W, int O, int G,
                                            int KH, int KW, int PH, int PW, int OH, int OW)
{
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= N * O * OH * OW || isfinite(y[e])) return;
    int ow = e % OW;
    int oh = (e / OW) % OH;
    int o = (e / (OW * OH)) % O;
    int n = e / (OW * OH * O);
    int CG = C / G, g = o / (O / G);
    float sum = 0.0f;
    for (int c = 0; c < CG; ++c)
        for (int k = 0; k < KH; ++k)
            for (int l = 0; l < KW; ++l) {
                int h = oh + k - PH, wx = ow + l - PW;
                float xv = (h >= 0 && h < H && wx >= 0 && wx < W) ? x[((n * C + g * CG + c) * H + h) * W + wx] : 0.0f;
                sum += w[((o * CG + c) * KH + k) * KW + l] * xv;
            }
    y[e] = sum + b[o];
}

/* dx[n, c, h, w] = sum over the filters o of c's group and the offsets k, l with a valid output
 * (oh, ow) = (h + PH - k, w + PW - l) of w[o, c % (C/G), k, l] * dy[n, o, oh, ow] */
extern "C" __global__ void winograd_fixup_dx(float* __restrict__ dx, const float* __restrict__ dy,
                                             const float* __restrict__ w,
                                             int N, int C, int H, int W, int O, int G,
                                             int KH, int KW, int PH, int PW, int OH, int OW)
{
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= N * C * H * W || isfinite(dx[e])) return;
    int wx = e % W;
    int h = (e / W) % H;
    int c = (e / (W * H)) % C;
    int n = e / (W * H * C);
    int CG = C / G, OG = O / G, g = c / CG;
    float sum = 0.0f;
    for (int o = g * OG; o < (g + 1) * OG; ++o)
        for (int k = 0; k < KH; ++k)
            for (int l = 0; l < KW; ++l) {
                int oh = h + PH - k, ow = wx + PW - l;
                if (oh >= 0 && oh < OH && ow >= 0 && ow < OW)
                    sum += w[((o * CG + c % CG) * KH + k) * KW + l] * dy[((n * O + o) * OH + oh) * OW + ow];
            }
    dx[e] = sum;
}

/* dw[o, c, k, l] = sum over n, oh, ow of dy[n, o, oh, ow] * x[n, g*C/G + c, oh + k - PH, ow + l - PW]
 * (zero outside x) */
extern "C" __global__ void winograd_fixup_dw(float* __restrict__ dw, const float* __restrict__ dy,
                                             const float* __restrict__ x,
                                             int N, int C, int H, int W, int O, int G,
                                             int KH, int KW, int PH, int PW, int OH, int OW)
{
    int CG = C / G;
    int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= O * CG * KH * KW || isfinite(dw[e])) return;
    int l = e % KW;
    int k = (e / KW) % KH;
    int c = (e / (KW * KH)) % CG;
    int o = e / (KW * KH * CG);
    int g = o / (O / G);
    float sum = 0.0f;
    for (int n = 0; n < N; ++n)
        for (int oh = 0; oh < OH; ++oh)
            for (int ow = 0; ow < OW; ++ow) {
                int h = oh + k - PH, wx = ow + l - PW;
                float xv = (h >= 0 && h < H && wx >= 0 && wx < W) ? x[((n * C + g * CG + c) * H + h) * W + wx] : 0.0f;
                sum += dy[((n * O + o) * OH + oh) * OW + ow] * xv;
            }
    dw[e] = sum;
}
