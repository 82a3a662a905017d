/* augment.cu: the last steps of the training and validation transforms for a batch of uint8 crops,
 * on the device; math and NumPy reference in minialex/data/augment.py (augment_batch).
 *     x = crop / 255;  mirrored where flips[n];  x + offsets[n, c];  (x - mean[c]) / stdev[c]
 * crops: N x S x S x 3 uint8 (HWC per image, what the host gathered), out: N x 3 x S x S float32
 * (NCHW), flips: N int32, offsets: N x 3 float32 (the PCA colour shift), mean, stdev: 3 float32.
 * One thread per output element; the same float32 operations in the same order as the reference,
 * so the result equals it bit for bit.
 */
extern "C" __global__ void augment_batch(float* __restrict__ out, const unsigned char* __restrict__ crops,
                                         const int* __restrict__ flips, const float* __restrict__ offsets,
                                         const float* __restrict__ mean, const float* __restrict__ stdev,
                                         int N, int S)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;   // N*3*S*S < 2^31 (minialex.cuda.blocks)
    if (idx >= N * 3 * S * S) return;
    int w = idx % S;
    int h = (idx / S) % S;
    int c = (idx / (S * S)) % 3;
    int n = idx / (3 * S * S);
    int source_w = flips[n] ? S - 1 - w : w;           // a flipped image reads its row backwards
    float x = (float)crops[((n * S + h) * S + source_w) * 3 + c] / 255.0f;
    x = x + offsets[n * 3 + c];
    out[idx] = (x - mean[c]) / stdev[c];
}
