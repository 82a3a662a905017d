"""Device batches: DataLoader(..., device="cuda" | "cuda:N" | "cuda-emu") yields (Tensor on the
device, labels) made on the device by kernels/augment.cu from the uint8 crops the host gathered.

On a GPU the host's part (gathering crops from the decoded store, in DataLoader's background
thread) and the copy (from pinned memory, on a CUDA stream of its own) both run while the model
computes the previous batch; the compute stream waits for a batch's copy and augmentation only
when it uses the batch. A small ring of pinned buffers is reused once its copy has finished.
On "cuda-emu" the same kernel runs on the CPU emulator (slow, exact: for testing).
"""
import numpy as np

from .. import backend, cuda
from ..tensor import Tensor

RING = 3  # pinned buffers in turn: the gather of batch k + 1 overlaps the copy of batch k


class DeviceBatches:
    def __init__(self, loader):
        self.loader, self.device = loader, backend.check_device(loader.device)
        self.mean = np.asarray(loader.transform.stats["mean"], np.float32)
        self.std = np.asarray(loader.transform.stats["std"], np.float32)

    def __iter__(self):
        if backend.is_gpu(self.device):
            yield from self._gpu()
            return
        for crops, flips, offsets, labels, full in self.loader.host_batches():
            if full is not None:
                yield Tensor(full, device=self.device), labels
                continue
            out = np.empty((len(crops), 3, crops.shape[1], crops.shape[1]), np.float32)
            if out.size:
                cuda.launch("augment", "augment_batch", *cuda.blocks(out.size), out, crops,
                            flips.astype(np.int32), np.ascontiguousarray(offsets, np.float32), self.mean, self.std,
                            np.int32(len(crops)), np.int32(crops.shape[1]))
            yield Tensor._make(out, self.device), labels

    def _gpu(self):
        cp = backend.cupy()
        import cupyx
        # The stream, the constants, the pinned buffers, the copies, the kernel and the events all
        # belong to the loader's GPU. The scope is entered for each batch's work and never held
        # across a yield: between batches the caller's current device is its own.
        with backend.device_scope(self.device):
            stream = cp.cuda.Stream(non_blocking=True)
            mean, std = cp.asarray(self.mean), cp.asarray(self.std)
        ring, events, k = {}, [None] * RING, 0
        for crops, flips, offsets, labels, full in self.loader.host_batches():
            if full is not None:
                yield Tensor(full, device=self.device), labels
                continue
            with backend.device_scope(self.device):
                slot = k % RING
                if events[slot] is not None:
                    events[slot].synchronize()              # its previous copy is done: reuse the buffer
                key = (slot, crops.shape)
                if key not in ring:
                    ring[key] = cupyx.empty_pinned(crops.shape, np.uint8)
                pinned = ring[key]
                np.copyto(pinned, crops)
                with stream:
                    d_crops = cp.empty(crops.shape, np.uint8)
                    d_crops.set(pinned, stream=stream)      # asynchronous: the source is pinned
                    d_flips = cp.asarray(flips.astype(np.int32))
                    d_offsets = cp.asarray(np.ascontiguousarray(offsets, np.float32))
                    out = cp.empty((len(crops), 3, crops.shape[1], crops.shape[1]), np.float32)
                    if out.size:
                        cuda.launch("augment", "augment_batch", *cuda.blocks(out.size), out, d_crops, d_flips,
                                    d_offsets, mean, std, np.int32(len(crops)), np.int32(crops.shape[1]))
                    events[slot] = stream.record()
                cp.cuda.get_current_stream().wait_event(events[slot])   # this GPU's model stream waits here
            k += 1
            yield Tensor._make(out, self.device), labels
