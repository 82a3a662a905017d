/* half_kernels.cu: test kernels for the emulator's cuda_fp16.h (tests/test_half.py), written as
 * for a GPU (tests/test_nvrtc.py compiles them with NVRTC too). One thread per element.
 */
#include <cuda_fp16.h>

/* f = (float)x exactly; y = x again through __float2half_rn */
extern "C" __global__ void half_roundtrip(__half* __restrict__ y, float* __restrict__ f,
                                          const __half* __restrict__ x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    f[i] = __half2float(x[i]);
    y[i] = __float2half_rn(f[i]);
}

/* x rounded to half three ways: __float2half_rn, __float2half, the constructor */
extern "C" __global__ void half_from_float(__half* __restrict__ y, const float* __restrict__ x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = __float2half_rn(x[i]);
    y[n + i] = __float2half(x[i]);
    y[2 * n + i] = __half(x[i]);
}

/* out[op * n + i]: the intrinsics, then the operators, then the unary ones */
extern "C" __global__ void half_binary(__half* __restrict__ out, const __half* __restrict__ a,
                                       const __half* __restrict__ b, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half x = a[i], y = b[i];
    out[0 * n + i] = __hadd(x, y);
    out[1 * n + i] = __hsub(x, y);
    out[2 * n + i] = __hmul(x, y);
    out[3 * n + i] = __hdiv(x, y);
    out[4 * n + i] = x + y;
    out[5 * n + i] = x - y;
    out[6 * n + i] = x * y;
    out[7 * n + i] = x / y;
    out[8 * n + i] = __hmax(x, y);
    out[9 * n + i] = __hmin(x, y);
    out[10 * n + i] = __hneg(x);
    out[11 * n + i] = __habs(x);
    out[12 * n + i] = -x;
    __half z = x;
    z += y;
    out[13 * n + i] = z;
}

/* out[i]: one bit per comparison of a[i] and b[i] (bits 0-5 the intrinsics, 6-11 the operators,
 * 12-15 the unordered ones), bit 16 __hisnan(a), bits 17-18 __hisinf(a) + 1 */
extern "C" __global__ void half_compare(int* __restrict__ out, const __half* __restrict__ a,
                                        const __half* __restrict__ b, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half x = a[i], y = b[i];
    int bits = __heq(x, y) | __hne(x, y) << 1 | __hlt(x, y) << 2 | __hle(x, y) << 3 | __hgt(x, y) << 4 |
               __hge(x, y) << 5;
    bits |= (x == y) << 6 | (x != y) << 7 | (x < y) << 8 | (x <= y) << 9 | (x > y) << 10 | (x >= y) << 11;
    bits |= __hneu(x, y) << 12 | __hequ(x, y) << 13 | __hltu(x, y) << 14 | __hgtu(x, y) << 15;
    bits |= __hisnan(x) << 16 | (__hisinf(x) + 1) << 17;
    out[i] = bits;
}

/* out = a * b + c rounded once: __hfma, and __hfma2 on (a, a) (b, b) (c, c) */
extern "C" __global__ void half_fma(__half* __restrict__ out, const __half* __restrict__ a,
                                    const __half* __restrict__ b, const __half* __restrict__ c, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = __hfma(a[i], b[i], c[i]);
    __half2 pair = __hfma2(__half2half2(a[i]), __halves2half2(b[i], b[i]), __half2half2(c[i]));
    out[n + i] = __high2half(pair);
}

/* the __half2 operations on (a[i], b[i]) and (b[i], a[i]): low and high halves of each result */
extern "C" __global__ void half2_ops(__half* __restrict__ out, const __half* __restrict__ a,
                                     const __half* __restrict__ b, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __half2 p = __halves2half2(a[i], b[i]), q = __lowhigh2highlow(p);     // (a, b) and (b, a)
    __half2 r[6] = {__hadd2(p, q), __hsub2(p, q), __hmul2(p, q), __h2div(p, q), __hmax2(p, q), p * q};
    for (int op = 0; op < 6; ++op) {
        out[(2 * op) * n + i] = __low2half(r[op]);
        out[(2 * op + 1) * n + i] = __high2half(r[op]);
    }
    float2 f = __half22float2(p);                                          // and back
    __half2 back = __floats2half2_rn(f.x, f.y);
    out[12 * n + i] = __low2half(back);
    out[13 * n + i] = __high2half(__heq2(p, back));                        // 1.0 where equal
}

/* y = x * s with a __half scalar argument */
extern "C" __global__ void half_scale(__half* __restrict__ y, const __half* __restrict__ x, __half s, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = x[i] * s;
}
