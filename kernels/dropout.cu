/* dropout.cu: inverted dropout with a counter-based mask; math in minialex/ops/dropout.py.
 * Element i is kept when (fmix32((offset + i) * 0x9E3779B9 + fmix32(seed)) >> 8) >= threshold
 * (unsigned, so mod 2^32), the same hash as the NumPy reference, so one seed gives one mask on every
 * device. offset is the global counter of element 0 (data parallelism: a sample's mask does not
 * depend on which process holds it). Nothing is stored between forward and backward: the backward
 * recomputes the mask from the seed and the offset.
 * Flat, C-contiguous float32, or float16 (the _half kernels); one thread per element. A dropped
 * element is exactly 0, even an infinite one (a multiplication by a 0/1 mask would make it NaN).
 */
#include <cuda_fp16.h>

__device__ __forceinline__ unsigned int fmix32(unsigned int h)   /* MurmurHash3's finalizer */
{
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

/* counter = offset + i, the element's global index */
__device__ __forceinline__ bool dropout_keep(unsigned int counter, unsigned int seed, unsigned int threshold)
{
    return (fmix32(counter * 0x9E3779B9u + fmix32(seed)) >> 8) >= threshold;
}

/* y = x / (1 - p) where kept, 0 elsewhere; inv_keep = 1 / (1 - p) */
extern "C" __global__ void dropout_forward(float* __restrict__ y, const float* __restrict__ x, int n,
                                           unsigned int seed, unsigned int offset, unsigned int threshold,
                                           float inv_keep)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = dropout_keep(offset + (unsigned int)i, seed, threshold) ? x[i] * inv_keep : 0.0f;
}

/* dx = dy / (1 - p) where kept, 0 elsewhere */
extern "C" __global__ void dropout_backward(float* __restrict__ dx, const float* __restrict__ dy, int n,
                                            unsigned int seed, unsigned int offset, unsigned int threshold,
                                            float inv_keep)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    dx[i] = dropout_keep(offset + (unsigned int)i, seed, threshold) ? dy[i] * inv_keep : 0.0f;
}

/* ----- float16: x * inv_keep in half, the product rounded once (__hmul), inv_keep = 1 / (1 - p)
 * rounded to half first, as the reference's x * float16(1 / (1 - p)) ----- */

extern "C" __global__ void dropout_forward_half(__half* __restrict__ y, const __half* __restrict__ x, int n,
                                                unsigned int seed, unsigned int offset, unsigned int threshold,
                                                __half inv_keep)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = dropout_keep(offset + (unsigned int)i, seed, threshold) ? __hmul(x[i], inv_keep) : __float2half(0.0f);
}

extern "C" __global__ void dropout_backward_half(__half* __restrict__ dx, const __half* __restrict__ dy, int n,
                                                 unsigned int seed, unsigned int offset, unsigned int threshold,
                                                 __half inv_keep)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    dx[i] = dropout_keep(offset + (unsigned int)i, seed, threshold) ? __hmul(dy[i], inv_keep) : __float2half(0.0f);
}
