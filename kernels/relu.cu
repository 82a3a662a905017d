/* relu.cu: y = max(x, 0) and its backward; math in minialex/ops/relu.py.
 * Any shape, flat, C-contiguous float32. One thread per element.
 */
extern "C" __global__ void relu_forward(float* __restrict__ y, const float* __restrict__ x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dx = dy where x > 0, else 0 */
extern "C" __global__ void relu_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                         const float* __restrict__ x, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}
