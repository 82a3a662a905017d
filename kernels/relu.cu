/* relu.cu: y = max(x, 0) and its backward; math in minialex/ops/relu.py.
 * Any shape, flat, C-contiguous float32. One thread per element.
 * Both test `x <= 0`, which is false for NaN: a NaN input gives NaN forward and passes dy backward,
 * as in PyTorch (`x > 0 ? x : 0` would turn NaN into 0 and hide it from the training's NaN guard).
 */
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
