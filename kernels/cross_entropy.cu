/* cross_entropy.cu: softmax cross-entropy, forward and fused backward; math in
 * minialex/ops/cross_entropy.py.
 * logits, probs, dlogits: N x K, C-contiguous float32; target: N int32.
 */
#define CE_THREADS 256

/* One block per row n. The threads find the row max, then the sum of exp(z - max), each by a
 * strided pass and a shared-memory tree reduction; then probs = exp(z - max) / sum and
 * row_loss[n] = -(log p[target]) / N (the host sums the N values into the mean). */
extern "C" __global__ void cross_entropy_forward(float* __restrict__ row_loss, float* __restrict__ probs,
                                                 const float* __restrict__ logits,
                                                 const int* __restrict__ target, int N, int K)
{
    __shared__ float part[CE_THREADS];
    int n = blockIdx.x, t = threadIdx.x;
    const float* z = logits + (long long)n * K;

    float m = __int_as_float(0xff800000);         // row max, from -infinity
    for (int k = t; k < K; k += CE_THREADS) m = fmaxf(m, z[k]);
    part[t] = m;
    __syncthreads();
    for (int half = CE_THREADS / 2; half > 0; half /= 2) {
        if (t < half) part[t] = fmaxf(part[t], part[t + half]);
        __syncthreads();
    }
    m = part[0];
    __syncthreads();                              // all have read part[0] before it is reused

    float s = 0.0f;                               // sum of exp(z - max)
    for (int k = t; k < K; k += CE_THREADS) s += expf(z[k] - m);
    part[t] = s;
    __syncthreads();
    for (int half = CE_THREADS / 2; half > 0; half /= 2) {
        if (t < half) part[t] += part[t + half];
        __syncthreads();
    }
    float log_sum = logf(part[0]);

    for (int k = t; k < K; k += CE_THREADS) probs[(long long)n * K + k] = expf(z[k] - m - log_sum);
    if (t == 0) row_loss[n] = -(z[target[n]] - m - log_sum) / N;
}

/* dz[n, k] = dloss * (p[n, k] - [k == target[n]]) / N; one thread per element.
 * dloss is read from device memory (no copy to the host). */
extern "C" __global__ void cross_entropy_backward(float* __restrict__ dz, const float* __restrict__ probs,
                                                  const int* __restrict__ target,
                                                  const float* __restrict__ dloss, int N, int K)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;   // N*K < 2^31 (minialex.cuda.blocks)
    if (idx >= N * K) return;
    int k = idx % K;
    int n = idx / K;
    float onehot = (k == target[n]) ? 1.0f : 0.0f;
    dz[idx] = dloss[0] * (probs[idx] - onehot) / N;
}
