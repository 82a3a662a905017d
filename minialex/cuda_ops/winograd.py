"""conv2d by Winograd's minimal filtering, CUDA pair: the tile transforms in kernels/winograd.cu,
the products through minialex.cuda.gemm (cuBLAS on a GPU), db in kernels/bias.cu. Math and the
reference it must equal: minialex/ops/winograd.py.

Layouts, as the fast CPU pair's (minialex/cpu/winograd.py); AA = a_h*a_w tile positions p,
T = N*TH*TW tiles ordered (n, ty, tx):
    U (AA, O, C/G)   = Gh @ w @ Gw^T per filter            winograd_filter
    V (AA, C, T)     = BTh @ D @ BTw^T per input tile       winograd_input (reads x's padding as zeros)
    M (AA, O, T)     = U[p] @ V[p] per position and group   one batched gemm, batch index p*G + g
    y (N, O, OH, OW) = ATh @ M @ ATw^T per tile, + b        winograd_output (cuts the partial tiles)
Backward (each step the adjoint of one above; V is made again from x):
    dM = ATh^T @ dY @ ATw      winograd_output_adjoint (dy's tiles, zeros past the edge)
    dU = dM @ V^T              batched gemm;  dw = Gh^T @ dU @ Gw    winograd_filter_adjoint
    dV = U^T @ dM              batched gemm;  dD = BTh^T @ dV @ BTw  winograd_input_adjoint,
                               then each dx pixel sums its overlapping tiles    winograd_gather_dx
Where y, dx or dw is not finite, winograd_fixup_y / _dx / _dw put the direct convolution's value:
launched every time (no host sync to ask first); only threads with a non-finite element work.
float16 (mixed precision), as the reference: the whole Winograd in float32 on float32 copies of the
inputs (transforms, products and the fix-ups), each result rounded to half once at the end.

Memory: V, M and their gradients grow with the batch (M is AA/(m_h*m_w) times the size of y).
Where one of them would pass TRANSIENT_BYTES, the batch runs in chunks of images (y, dx and dU per
chunk; dw sums the chunks' dU): at most two such buffers live at once (dM and V, or dV and dD), so
the transient peak stays below 2 * TRANSIENT_BYTES whatever the batch.
"""
import numpy as np

from .. import backend, cuda
from ..ops import winograd as spec

TRANSIENT_BYTES = 256 * 2**20   # the most V, M, dM, dV or dD may take at once (a chunk of images)

_device_matrices = {}           # (array module, device, m, r) -> (AT, G, BT) as float32 device arrays


def _matrices(xp, m, r):
    """(AT (m, a), G (a, r), BT (a, a)) of F(m, r) as float32 arrays on the current device (the
    op's GPU: Function.apply and the backward run inside its device_scope), made once per device
    (a copy to the GPU per call would wait for the queued kernels)."""
    device = None if xp is np else xp.cuda.Device().id
    key = (xp.__name__, device, m, r)
    if key not in _device_matrices:
        _device_matrices[key] = tuple(xp.asarray(mat.astype(np.float32))   # C-contiguous float32
                                      for mat in spec.winograd_matrices(m, r))
    return _device_matrices[key]


def _i32(*values):
    return tuple(np.int32(v) for v in values)


class _Geometry:
    """The sizes of one Winograd convolution, and the int arguments its kernels take."""

    def __init__(self, x_shape, w_shape, padding, groups, tile):
        (self.n, self.c, self.h, self.w), (self.o, self.cg, self.kh, self.kw) = x_shape, w_shape
        (self.ph, self.pw), (self.mh, self.mw), self.g = padding, tile, groups
        self.oh, self.ow, self.th, self.tw = spec.tiles(x_shape, w_shape, padding, tile)
        self.ah, self.aw = self.mh + self.kh - 1, self.mw + self.kw - 1
        self.aa, self.og = self.ah * self.aw, self.o // groups
        cuda.fits_int32(self.n * self.c * self.h * self.w, "x")              # the fix-ups index whole arrays
        cuda.fits_int32(self.n * self.o * self.oh * self.ow, "y")

    def matrices(self, xp):
        """((ATh, Gh, BTh), (ATw, Gw, BTw)) on the device of the array module xp."""
        return _matrices(xp, self.mh, self.kh), _matrices(xp, self.mw, self.kw)

    def chunks(self):
        """[(n0, n1), ...]: images per chunk such that V, M and the like stay within TRANSIENT_BYTES."""
        per_image = self.aa * max(self.o, self.c) * self.th * self.tw * 4
        step = max(1, TRANSIENT_BYTES // per_image)
        for what, size in (("V", self.c), ("M", self.o)):
            cuda.fits_int32(self.aa * size * min(step, self.n) * self.th * self.tw, what)
        return [(n0, min(self.n, n0 + step)) for n0 in range(0, self.n, step)]

    def tiling(self, n):                 # winograd_input, winograd_gather_dx
        return _i32(n, self.c, self.h, self.w, self.ph, self.pw, self.mh, self.mw, self.ah, self.aw, self.th, self.tw)

    def out_tiling(self, n):             # winograd_output, winograd_output_adjoint
        return _i32(n, self.o, self.oh, self.ow, self.mh, self.mw, self.ah, self.aw, self.th, self.tw)

    def filters(self):                   # winograd_filter, winograd_filter_adjoint
        return _i32(self.o * self.cg, self.kh, self.kw, self.ah, self.aw)

    def direct(self):                    # the fix-ups
        return _i32(self.n, self.c, self.h, self.w, self.o, self.g, self.kh, self.kw, self.ph, self.pw,
                    self.oh, self.ow)


def _transform_filter(xp, w, geo):
    """U (AA, O, C/G) = Gh @ w @ Gw^T."""
    u = xp.empty((geo.aa, geo.o, geo.cg), dtype=np.float32)
    if u.size:
        (_, gh, _), (_, gw, _) = geo.matrices(xp)
        cuda.launch("winograd", "winograd_filter", *cuda.blocks(geo.o * geo.cg), u, w, gh, gw, *geo.filters())
    return u


def _transform_input(xp, x, geo):
    """V (AA, C, T) = BTh @ D @ BTw^T for every tile D of x (a chunk of images)."""
    n = x.shape[0]
    t = n * geo.th * geo.tw
    v = xp.empty((geo.aa, geo.c, t), dtype=np.float32)
    if v.size:
        (_, _, bth), (_, _, btw) = geo.matrices(xp)
        cuda.launch("winograd", "winograd_input", *cuda.planes(t, geo.c), v, x, bth, btw, *geo.tiling(n))
    return v


def winograd_forward(x, w, b, padding, groups, tile):
    if x.dtype == np.float16:   # float32 throughout, rounded once (the cache holds the float32 copies)
        y, cache = winograd_forward(x.astype(np.float32), w.astype(np.float32),
                                    None if b is None else b.astype(np.float32), padding, groups, tile)
        return y.astype(np.float16), cache
    xp = backend.xp_of(x)
    geo = _Geometry(x.shape, w.shape, padding, groups, tile)
    y = xp.empty((geo.n, geo.o, geo.oh, geo.ow), dtype=np.float32)
    cache = spec.WinogradCache(x, w, b is not None, padding, groups, tile)
    if y.size == 0:
        return y, cache
    bias = b if b is not None else xp.zeros(geo.o, dtype=np.float32)
    (ath, _, _), (atw, _, _) = geo.matrices(xp)
    u = _transform_filter(xp, w, geo)                                          # (AA, O, C/G)
    for n0, n1 in geo.chunks():
        t = (n1 - n0) * geo.th * geo.tw
        v = _transform_input(xp, x[n0:n1], geo)                                # (AA, C, T)
        m = xp.empty((geo.aa, geo.o, t), dtype=np.float32)                     # (AA, O, T)
        # M[p, group] = U[p, group] @ V[p, group] for each of the AA*G (position, group) pairs
        cuda.gemm(m, u, v, geo.og, t, geo.cg, a_mk=(geo.cg, 1), b_kn=(t, 1), batch=geo.aa * groups,
                  a_batch=geo.og * geo.cg, b_batch=geo.cg * t, c_batch=geo.og * t)
        del v
        cuda.launch("winograd", "winograd_output", *cuda.planes(t, geo.o), y[n0:n1], m, bias, ath, atw,
                    *geo.out_tiling(n1 - n0))
        del m
    cuda.launch("winograd", "winograd_fixup_y", *cuda.blocks(y.size), y, x, w, bias, *geo.direct())
    return y, cache


def winograd_backward(dy, cache, needs):
    if dy.dtype == np.float16:  # (float32 copies in the cache: see winograd_forward)
        grads = winograd_backward(dy.astype(np.float32), cache, needs)
        return tuple(None if d is None else d.astype(np.float16) for d in grads)
    x, w, has_bias, padding, groups, tile = cache
    xp = backend.xp_of(dy)
    geo = _Geometry(x.shape, w.shape, padding, groups, tile)
    new = xp.zeros if dy.size == 0 else xp.empty                               # nothing to add up: zeros
    dx = new(x.shape, dtype=np.float32) if needs[0] else None
    dw = new(w.shape, dtype=np.float32) if needs[1] else None
    db = new((geo.o,), dtype=np.float32) if has_bias and needs[2] else None
    if dy.size == 0:
        return dx, dw, db
    if db is not None:
        cuda.fits_int32(dy.size, "dy")
        cuda.launch("bias", "bias_backward", (geo.o,), (256,), db, dy, *_i32(geo.n, geo.o, geo.oh * geo.ow))
    if dx is None and dw is None:
        return dx, dw, db
    (ath, gh, bth), (atw, gw, btw) = geo.matrices(xp)
    chunks = geo.chunks()
    u = _transform_filter(xp, w, geo) if dx is not None else None             # (AA, O, C/G)
    du = xp.empty((len(chunks), geo.aa, geo.o, geo.cg), dtype=np.float32) if dw is not None else None
    for k, (n0, n1) in enumerate(chunks):
        t = (n1 - n0) * geo.th * geo.tw
        dm = xp.empty((geo.aa, geo.o, t), dtype=np.float32)                    # (AA, O, T)
        cuda.launch("winograd", "winograd_output_adjoint", *cuda.planes(t, geo.o), dm, dy[n0:n1], ath, atw,
                    *geo.out_tiling(n1 - n0))
        if dw is not None:  # dU[p, group] = dM[p, group] @ V[p, group]^T   (V^T: swapped strides)
            v = _transform_input(xp, x[n0:n1], geo)                            # (AA, C, T)
            cuda.gemm(du[k], dm, v, geo.og, geo.cg, t, a_mk=(t, 1), b_kn=(1, t), batch=geo.aa * groups,
                      a_batch=geo.og * t, b_batch=geo.cg * t, c_batch=geo.og * geo.cg)
            del v
        if dx is not None:  # dV[p, group] = U[p, group]^T @ dM[p, group], then back to the pixels
            dv = xp.empty((geo.aa, geo.c, t), dtype=np.float32)                # (AA, C, T)
            cuda.gemm(dv, u, dm, geo.cg, t, geo.og, a_mk=(1, geo.cg), b_kn=(t, 1), batch=geo.aa * groups,
                      a_batch=geo.og * geo.cg, b_batch=geo.og * t, c_batch=geo.cg * t)
            del dm                                                             # back to the pool first
            dd = xp.empty((geo.aa, geo.c, t), dtype=np.float32)                # (AA, C, T)
            if dd.size:
                cuda.launch("winograd", "winograd_input_adjoint", *cuda.planes(t, geo.c), dd, dv, bth, btw,
                            *_i32(geo.c, t, geo.ah, geo.aw))
            del dv
            if dx.size:
                cuda.launch("winograd", "winograd_gather_dx", *cuda.planes(geo.h * geo.w, (n1 - n0) * geo.c),
                            dx[n0:n1], dd, *geo.tiling(n1 - n0))
            del dd
    if dw is not None and dw.size:
        cuda.launch("winograd", "winograd_filter_adjoint", *cuda.blocks(dw.size // (geo.kh * geo.kw)), dw, du,
                    gh, gw, *geo.filters(), np.int32(len(chunks)))
        cuda.launch("winograd", "winograd_fixup_dw", *cuda.blocks(dw.size), dw, dy, x, *geo.direct())
    if dx is not None and dx.size:
        cuda.launch("winograd", "winograd_fixup_dx", *cuda.blocks(dx.size), dx, dy, w, *geo.direct())
    return dx, dw, db
