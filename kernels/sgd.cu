/* sgd.cu: the paper's SGD update fused into one pass over a parameter; math in minialex/optim.py.
 *     v <- momentum * v - weight_decay * lr * w - lr * g
 *     w <- w + v
 * Flat, C-contiguous float32; one thread per element. w and v are updated in place.
 */
extern "C" __global__ void sgd_update(float* __restrict__ w, float* __restrict__ v,
                                      const float* __restrict__ g, int n,
                                      float lr, float momentum, float weight_decay)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float vi = momentum * v[i] - weight_decay * lr * w[i] - lr * g[i];
    v[i] = vi;
    w[i] += vi;
}
