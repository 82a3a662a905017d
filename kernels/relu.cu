/* relu.cu: y = max(x, 0) and its backward; math in minialex/ops/relu.py.
 * Any shape, flat, C-contiguous float32 (relu_forward, relu_backward: one thread per element) or
 * float16 (the _half kernels: two elements per thread as one __half2, a 32-bit load and store).
 * Both test `x <= 0`, which is false for NaN: a NaN input gives NaN forward and passes dy backward,
 * as in PyTorch (`x > 0 ? x : 0` would turn NaN into 0 and hide it from the training's NaN guard).
 */
#include <cuda_fp16.h>

extern "C" __global__ void relu_forward(float* __restrict__ y, const float* __restrict__ x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = x[i] <= 0.0f ? 0.0f : x[i];
}

/* dx = 0 where x <= 0, else dy */
extern "C" __global__ void relu_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                         const float* __restrict__ x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    dx[i] = x[i] <= 0.0f ? 0.0f : dy[i];
}

/* ----- float16: a select, exact; the same test x <= 0 (false for NaN) ----- */

__device__ __forceinline__ __half relu_select(__half x, __half keep)   /* keep where x > 0 or NaN */
{
    return __hle(x, __float2half(0.0f)) ? __float2half(0.0f) : keep;
}

/* Thread i takes the pair (2i, 2i + 1) as one __half2 (x and y 4-byte aligned: the Python side
 * copies an array that is not); when n is odd, the thread past the last pair takes element n - 1. */
extern "C" __global__ void relu_forward_half(__half* __restrict__ y, const __half* __restrict__ x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;       // pair i: elements 2i and 2i + 1
    if (2 * i + 1 < n) {
        __half2 v = ((const __half2*)x)[i];
        ((__half2*)y)[i] = __halves2half2(relu_select(__low2half(v), __low2half(v)),
                                          relu_select(__high2half(v), __high2half(v)));
    } else if (2 * i < n) {                              // the odd last element
        y[2 * i] = relu_select(x[2 * i], x[2 * i]);
    }
}

/* dx = 0 where x <= 0, else dy; pairs as relu_forward_half */
extern "C" __global__ void relu_backward_half(__half* __restrict__ dx, const __half* __restrict__ dy,
                                              const __half* __restrict__ x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (2 * i + 1 < n) {
        __half2 v = ((const __half2*)x)[i], d = ((const __half2*)dy)[i];
        ((__half2*)dx)[i] = __halves2half2(relu_select(__low2half(v), __low2half(d)),
                                           relu_select(__high2half(v), __high2half(d)));
    } else if (2 * i < n) {
        dx[2 * i] = relu_select(x[2 * i], dy[2 * i]);
    }
}
