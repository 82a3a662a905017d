"""The one-command GPU check: run on a machine with a CUDA GPU, CuPy and PyTorch.

    python benchmarks/gpu_check.py            # prints one table
    python benchmarks/gpu_check.py --record   # ... and appends it to benchmarks/RESULTS.md

1. runs the `gpu`-marked tests (every kernel against the NumPy reference on the real GPU);
2. times an AlexNet train step (forward, loss, backward, SGD; batch 128, 227x227, float32) in
   minialex (cuBLAS GEMM, then the hand-written tiled GEMM) and in PyTorch with TF32 off, alternating
   in one process, and reports images/s and the ratio;
3. times each layer's forward and backward in both, and the GPU memory each allocator holds (CuPy's
   pool total, PyTorch's peak reserved);
4. end to end: generates 10,000 training and 1,000 validation JPEGs (500x375), runs
   `minialex-train --device cuda --arch alexnet --epochs 2 --batch-size 128` on them (decoded store
   built in epoch 1, batches augmented on the GPU), and compares epoch 2's images/s with the train
   step's alone (target: >= 0.9x);
5. data parallel on one GPU: the NCCL all-reduce of AlexNet's gradients (one flat buffer, a world of
   one process) against the host sum, and the time of the whole gradient reduction per step.
Finishes in well under 5 minutes on an H100.
"""
import argparse
import datetime
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import minialex as ma  # noqa: E402

ma.cpu.tune()  # the CPU settings minialex-train makes (minialex/cpu/tuning.py)
from minialex import cuda, functional as F  # noqa: E402


def save(name, text):
    """Also keep `text` as $OUT/name when $OUT is set (a remote machine's files come back from there)."""
    out_dir = os.environ.get("OUT")
    if out_dir:
        Path(out_dir, name).write_text(text)


def run_gpu_tests():
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "--tb=short", "-m", "gpu", "tests/"],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    save("gpu_tests.log", run.stdout + run.stderr)
    lines = [line for line in run.stdout.strip().splitlines() if line.strip()]
    if run.returncode != 0:
        print(run.stdout[-6000:], run.stderr[-2000:], flush=True)
    return run.returncode, lines[-1] if lines else run.stderr.strip()[-300:]


def torch_alexnet(torch, num_classes):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, 4), nn.ReLU(), nn.MaxPool2d(3, 2), nn.LocalResponseNorm(5, 5 * 1e-4, 0.75, 2.0),
        nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.LocalResponseNorm(5, 5 * 1e-4, 0.75, 2.0),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
        nn.Linear(4096, num_classes))


def time_steps(args, cp, torch, out):
    """Train-step times and peak memory: minialex (cuBLAS, tiled GEMM) against PyTorch."""
    n = args.batch
    rng = np.random.default_rng(0)
    x_host = rng.standard_normal((n, 3, 227, 227)).astype(np.float32)
    y_host = rng.integers(0, 1000, n)
    sync = cp.cuda.Device().synchronize

    ma.manual_seed(0)
    model = ma.models.AlexNet(1000).to("cuda")
    opt = ma.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x_ma = ma.Tensor(x_host, device="cuda")

    def ma_step():
        loss = F.cross_entropy(model(x_ma), y_host)
        model.zero_grad()
        loss.backward()
        opt.step()

    tmodel = torch_alexnet(torch, 1000).cuda()
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x_t, y_t = torch.tensor(x_host, device="cuda"), torch.tensor(y_host, device="cuda")

    def torch_step():
        loss = torch.nn.functional.cross_entropy(tmodel(x_t), y_t)
        topt.zero_grad()
        loss.backward()
        topt.step()

    def timed(step, repeats):
        times = []
        for _ in range(repeats):
            sync()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            sync()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return times

    pool = cp.get_default_memory_pool()
    for step in (ma_step, torch_step):
        timed(step, 2)  # warm-up: compile kernels, cuDNN autotune
    pool.free_all_blocks()
    torch.cuda.reset_peak_memory_stats()
    results = {"minialex (cuBLAS)": [], "minialex (tiled GEMM)": [], "PyTorch": []}
    peak_ma = 0
    for _ in range(args.steps):  # alternate, so both see the same machine state
        cuda.set_gemm("blas")
        results["minialex (cuBLAS)"] += timed(ma_step, 1)
        peak_ma = max(peak_ma, pool.total_bytes())
        results["PyTorch"] += timed(torch_step, 1)
    cuda.set_gemm("tiled")
    results["minialex (tiled GEMM)"] = timed(ma_step, max(2, args.steps // 2))
    cuda.set_gemm("blas")
    for i in range(2, 6):  # conv2 - conv5 by Winograd's largest tiles (algorithm="winograd")
        getattr(model, f"conv{i}").algorithm = "winograd"
    timed(ma_step, 1)  # warm-up: compile the tile sizes not used yet
    results["minialex (cuBLAS, Winograd conv2 - conv5)"] = timed(ma_step, max(2, args.steps // 2))
    for i in range(2, 6):
        getattr(model, f"conv{i}").algorithm = "auto"
    peak_torch = torch.cuda.max_memory_reserved()  # held by the allocator, as CuPy's pool total

    torch_median = np.median(results["PyTorch"])
    out += ["| implementation | median step (ms) | images/s | x PyTorch throughput | "
            "GPU memory held by the allocator, peak (MiB) |", "|---|---|---|---|---|"]
    for name, times in results.items():
        med = np.median(times)
        mem = peak_torch if name == "PyTorch" else peak_ma
        out.append(f"| {name} | {med * 1e3:.1f} | {n / med:.0f} | {torch_median / med:.2f} | "
                   f"{mem / 2**20:.0f} |")
    out.append("")
    return model, tmodel, x_host, ma_step, n / np.median(results["minialex (cuBLAS)"])


def precision_steps(args, cp, torch, out):
    """Mixed precision: minialex's float16 step (ma.autocast, float32 master weights, a loss scale)
    against PyTorch float32 (TF32 off), TF32 and AMP float16 (torch.autocast + GradScaler), steps
    alternating, with each allocator's peak; minialex float32 again for the same run's ratio."""
    from minialex.training import LossScaler
    n = args.batch
    rng = np.random.default_rng(1)
    x_host = rng.standard_normal((n, 3, 227, 227)).astype(np.float32)
    y_host = rng.integers(0, 1000, n)
    sync = cp.cuda.Device().synchronize
    ma.manual_seed(0)
    model = ma.models.AlexNet(1000).to("cuda")
    opt = ma.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x_ma, scaler = ma.Tensor(x_host, device="cuda"), LossScaler()
    params = [p for p in model.parameters()]

    def ma_step(fp16):
        with ma.autocast("float16" if fp16 else None):
            logits = model(x_ma)
        loss = F.cross_entropy(logits, y_host)
        model.zero_grad()
        (loss * scaler.scale if fp16 else loss).backward()
        if not fp16 or scaler.unscale(params):
            opt.step()

    tmodel = torch_alexnet(torch, 1000).cuda()
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x_t, y_t = torch.tensor(x_host, device="cuda"), torch.tensor(y_host, device="cuda")
    tscaler = torch.amp.GradScaler("cuda")

    def torch_step(mode):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
        with torch.autocast("cuda", dtype=torch.float16, enabled=mode == "amp"):
            loss = torch.nn.functional.cross_entropy(tmodel(x_t), y_t)
        topt.zero_grad()
        if mode == "amp":
            tscaler.scale(loss).backward()
            tscaler.step(topt)
            tscaler.update()
        else:
            loss.backward()
            topt.step()

    steps = {"minialex fp16": lambda: ma_step(True), "minialex fp32": lambda: ma_step(False),
             "PyTorch fp32 (TF32 off)": lambda: torch_step("fp32"), "PyTorch TF32": lambda: torch_step("tf32"),
             "PyTorch AMP fp16": lambda: torch_step("amp")}
    times, peaks, pool = {k: [] for k in steps}, {}, cp.get_default_memory_pool()
    for name, step in steps.items():                  # warm-up, and each one's allocator peak
        pool.free_all_blocks()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(2):
            step()
        sync()
        torch.cuda.synchronize()
        peaks[name] = pool.total_bytes() if name.startswith("minialex") else torch.cuda.max_memory_reserved()
    for _ in range(args.steps):                       # alternate, so all see the same machine state
        for name, step in steps.items():
            sync()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            sync()
            torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    out += [f"Mixed precision, batch {n} (minialex's loss scale {scaler.scale:g}, {scaler.skipped} steps skipped):", "",
            "| step | median (ms) | images/s | x PyTorch AMP | x PyTorch fp32 | allocator peak (MiB) |",
            "|---|---|---|---|---|---|"]
    amp, fp32 = np.median(times["PyTorch AMP fp16"]), np.median(times["PyTorch fp32 (TF32 off)"])
    for name, ts in times.items():
        med = np.median(ts)
        out.append(f"| {name} | {med * 1e3:.1f} | {n / med:.0f} | {amp / med:.2f} | {fp32 / med:.2f} | "
                   f"{peaks[name] / 2**20:.0f} |")
    out.append("")


def half_gemms(cp, out):
    """The float16 products: the hand-written tensor-core GEMM (kernels/gemm_wmma.cu) and the tiled
    one against cuBLAS gemmEx (float32 compute), on AlexNet's fc6 and conv3 shapes at batch 128."""
    shapes = {"fc6 forward (128 x 4096 x 9216)": (128, 4096, 9216),
              "conv3 forward (384 x 21632 x 2304)": (384, 128 * 13 * 13, 256 * 9)}
    out += ["float16 products (float32 sums), median of 5:", "", "| product | cuBLAS (ms) | wmma (ms) | tiled (ms) | "
            "wmma x cuBLAS time | max |wmma - cuBLAS| / max |C| |", "|---|---|---|---|---|---|"]
    sync = cp.cuda.Device().synchronize
    for name, (m, n, k) in shapes.items():
        a = cp.random.standard_normal(m * k, dtype=cp.float32).astype(cp.float16)
        b = cp.random.standard_normal(k * n, dtype=cp.float32).astype(cp.float16)
        results, times = {}, {}
        for mode in ("blas", "wmma", "tiled"):
            cuda.set_gemm(mode)
            c = cp.empty(m * n, cp.float32)
            cuda.gemm(c, a, b, m, n, k, (k, 1), (n, 1))     # warm-up (compiles)
            ts = []
            for _ in range(5):
                sync()
                t0 = time.perf_counter()
                cuda.gemm(c, a, b, m, n, k, (k, 1), (n, 1))
                sync()
                ts.append(time.perf_counter() - t0)
            times[mode], results[mode] = np.median(ts), c
        cuda.set_gemm("blas")
        err = float(cp.abs(results["wmma"] - results["blas"]).max() / cp.abs(results["blas"]).max())
        out.append(f"| {name} | {times['blas'] * 1e3:.2f} | {times['wmma'] * 1e3:.2f} | {times['tiled'] * 1e3:.2f} | "
                   f"{times['wmma'] / times['blas']:.1f} | {err:.1e} |")
    out.append("")


def profile_step(torch, ma_step, out):
    """Which GPU kernels a minialex step spends its time in (CUPTI, through PyTorch's profiler,
    sees every kernel of the process, CuPy's and cuBLAS's included)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        ma_step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    rows = sorted(events, key=lambda e: -getattr(e, key))
    total = sum(getattr(e, key) for e in rows)
    out += [f"GPU kernel time of one minialex step: {total / 1e3:.1f} ms", "",
            "| kernel | calls | ms | share |", "|---|---|---|---|"]
    for e in rows[:20]:
        t = getattr(e, key)
        out.append(f"| {e.key[:70]} | {e.count} | {t / 1e3:.2f} | {t / total:.0%} |")
    out.append("")


def step_overhead(cp, torch, ma_step, out):
    """The engine's per-step host work: the time Python takes to issue one step (no sync inside)
    against the time the GPU takes to run it, and how many kernels one step launches."""
    from torch.profiler import ProfilerActivity, profile
    sync = cp.cuda.Device().synchronize
    issue, total = [], []
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        ma_step()
        t1 = time.perf_counter()
        sync()
        issue.append(t1 - t0)
        total.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        ma_step()
        torch.cuda.synchronize()
    launches = sum(e.count for e in prof.key_averages())  # CUDA activity only: kernels and copies
    med_issue, med_total = np.median(issue), np.median(total)
    out += [f"Per-step host work (batch as above): issuing a step takes {med_issue * 1e3:.1f} ms of Python "
            f"(median of 5, spread {min(issue) * 1e3:.1f}-{max(issue) * 1e3:.1f}), the whole step "
            f"{med_total * 1e3:.1f} ms; {launches} GPU kernels and copies a step, "
            f"{med_issue / max(launches, 1) * 1e6:.0f} us of host time each. The host is "
            f"{'not ' if med_issue < 0.5 * med_total else ''}the bound "
            f"({med_issue / med_total:.0%} of the step).", ""]


def _algorithm_name(layer, o):
    """The convolution algorithm that ran, from the op's record ("" for other layers)."""
    kind = type(o._ctx).__name__ if o._ctx is not None else ""
    if kind == "WinogradConv2d":
        (mh, mw), (kh, kw) = o._ctx.cache.tile, o._ctx.cache.w.shape[2:]
        return f"winograd F({mh}x{mw}, {kh}x{kw})"
    return "im2col" if kind == "Conv2d" else ""


def time_layers(cp, torch, model, tmodel, x_host, out):
    """Per layer: the same input into each layer of both, forward then backward, synchronised. The
    stride-1 convolutions run once per algorithm: the "auto" choice, im2col, and Winograd's largest
    tiles (algorithm="winograd"), each against the same PyTorch (cuDNN) layer."""
    sync = cp.cuda.Device().synchronize
    out += ["| layer | algorithm | minialex fwd (ms) | minialex bwd (ms) | PyTorch fwd (ms) | PyTorch bwd (ms) | "
            "x PyTorch (fwd+bwd) |", "|---|---|---|---|---|---|---|"]

    def ma_times(layer, h):
        f_times, b_times = [], []
        for _ in range(3):
            inp = ma.Tensor(h, requires_grad=True, device="cuda")
            sync()
            t0 = time.perf_counter()
            o = layer(inp)
            sync()
            t1 = time.perf_counter()
            o.backward(ma.Tensor(cp.ones(o.shape, np.float32), device="cuda"))
            sync()
            f_times.append(t1 - t0)
            b_times.append(time.perf_counter() - t1)
        return min(f_times) * 1e3, min(b_times) * 1e3, o

    def torch_times(tlayer, h):
        f_times, b_times = [], []
        for _ in range(3):
            inp = torch.tensor(h, device="cuda", requires_grad=True)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            o = tlayer(inp)
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            o.backward(torch.ones_like(o))
            torch.cuda.synchronize()
            f_times.append(t1 - t0)
            b_times.append(time.perf_counter() - t1)
        return min(f_times) * 1e3, min(b_times) * 1e3

    h_ma = x_host
    for name, tlayer in zip(model.layer_order, list(tmodel)):
        layer = getattr(model, name)
        tf, tb = torch_times(tlayer, h_ma)
        variants = ["auto"]
        if name.startswith("conv") and layer.stride in (1, (1, 1)):
            variants += ["im2col", "winograd"]
        for variant in variants:
            saved = getattr(layer, "algorithm", None)
            if variant != "auto":
                layer.algorithm = variant
            try:
                f, b, o = ma_times(layer, h_ma)
            finally:
                if saved is not None:
                    layer.algorithm = saved
            label = _algorithm_name(layer, o) + (" (auto)" if variant == "auto" and len(variants) > 1 else "")
            out.append(f"| {name} | {label} | {f:.2f} | {b:.2f} | {tf:.2f} | {tb:.2f} | {(tf + tb) / (f + b):.2f} |")
            if variant == "auto":
                next_h = o.numpy()
        h_ma = next_h
    out.append("")


def end_to_end(args, step_rate, out):
    """A whole training run on generated JPEGs against the step alone."""
    import json
    import shutil
    import tempfile
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from loader import generate_parallel
    work = Path(tempfile.mkdtemp(prefix="minialex-e2e-"))
    try:
        t0 = time.perf_counter()
        generate_parallel(work / "data", args.e2e_images, "train")
        generate_parallel(work / "data", max(args.e2e_images // 10, 100), "val")
        made = time.perf_counter() - t0
        env = {**os.environ, "MINIALEX_STORES": str(work / "stores"), "MINIALEX_CACHE": str(work / "cache")}
        cmd = [sys.executable, "-m", "minialex.train", "--data", str(work / "data"), "--arch", args.e2e_arch,
               "--device", args.e2e_device, "--epochs", "2", "--batch-size", str(args.batch), "--workers",
               str(min(16, os.cpu_count() or 2)), "--out", str(work / "run")]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=480)
        save("e2e_train.log", run.stdout + run.stderr)
        if run.returncode != 0:
            raise RuntimeError(f"minialex-train exited {run.returncode}: {run.stderr[-2000:]}")
        records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
        e1, e2 = records[0]["images_per_s"], records[1]["images_per_s"]
        out += [f"End to end (`minialex-train --device {args.e2e_device} --arch {args.e2e_arch} --epochs 2 "
                f"--batch-size {args.batch}`, "
                f"{args.e2e_images} generated 500x375 JPEGs made in {made:.0f} s; run {time.perf_counter() - t0:.0f} s):", "",
                "| | images/s | x the step alone |", "|---|---|---|",
                f"| train step alone (above) | {step_rate:.0f} | 1.00 |",
                f"| epoch 1 (decoding into the store) | {e1:.0f} | {e1 / step_rate:.2f} |",
                f"| epoch 2 (from the store, augmented on the GPU) | {e2:.0f} | {e2 / step_rate:.2f} |", ""]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def nccl_check(cp, model, out):
    """The NCCL path of minialex.distributed in a world of one: the result equals the host sum (the
    gradients themselves), and the per-step cost of packing, reducing and unpacking the flat buffer."""
    from minialex import distributed
    world = distributed.World(None)
    params = list(model.parameters())
    rng = np.random.default_rng(0)
    hosts = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    for p, h in zip(params, hosts):
        p.grad = cp.asarray(h)
    flat = cp.asarray(np.concatenate([h.ravel() for h in hosts]))
    world._nccl_allreduce(flat)
    exact = bool((flat.get() == np.concatenate([h.ravel() for h in hosts])).all())
    times = []
    for _ in range(6):
        cp.cuda.Device().synchronize()
        t = time.perf_counter()
        world.allreduce_gradients(params, 128, (1.0, 2.0))
        cp.cuda.Device().synchronize()
        times.append(time.perf_counter() - t)
    close = all(np.allclose(p.grad.get(), h, rtol=1e-6) for p, h in zip(params, hosts))
    n = sum(h.size for h in hosts)
    out += [f"NCCL all-reduce, one GPU: {n / 1e6:.1f}M floats, equals the host sum: {exact}; "
            f"allreduce_gradients (pack and unpack; one process has nothing to reduce) {np.median(times[1:]) * 1e3:.2f} ms per step, "
            f"gradients kept: {close}", ""]
    for p in params:
        p.grad = None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--e2e-images", type=int, default=10000, help="generated JPEGs for the end-to-end run")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--e2e-device", default="cuda", help=argparse.SUPPRESS)   # cpu: a dry run of the part
    parser.add_argument("--e2e-arch", default="alexnet", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import cupy as cp
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    card = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    out = [f"## {datetime.date.today()} · {card} · batch {args.batch} · AlexNet (the paper's table), float32, TF32 off",
           "", f"CuPy {cp.__version__}, PyTorch {torch.__version__}, NumPy {np.__version__}", ""]
    failed = False

    def section(what, fn, *fn_args):
        """Run one part; a failure is reported in the table and the next part still runs."""
        nonlocal failed
        try:
            return fn(*fn_args)
        except Exception:
            failed = True
            out.extend([f"{what} FAILED:", "```", traceback.format_exc().strip()[-3000:], "```", ""])
        finally:
            save("gpu_check.md", "\n".join(out) + "\n")  # what is done so far survives a kill

    if not args.skip_tests:
        status, summary = section("gpu tests", run_gpu_tests) or (1, "did not run")
        failed |= status != 0
        out += [f"gpu tests: {'PASS' if status == 0 else 'FAIL'} ({summary})", ""]
    timed = section("train step", time_steps, args, cp, torch, out)
    if timed is not None:
        model, tmodel, x_host, ma_step = timed[:4]
        section("kernel profile", profile_step, torch, ma_step, out)
        section("step overhead", step_overhead, cp, torch, ma_step, out)
        section("per-layer times", time_layers, cp, torch, model, tmodel, x_host, out)
        section("mixed precision", precision_steps, args, cp, torch, out)
        section("float16 GEMMs", half_gemms, cp, out)
        section("NCCL all-reduce", nccl_check, cp, model, out)
        if not args.skip_e2e:
            del model, tmodel
            cp.get_default_memory_pool().free_all_blocks()
            torch.cuda.empty_cache()
            section("end to end", end_to_end, args, timed[4], out)
    text = "\n".join(out) + "\n"
    save("gpu_check.md", text)
    print(text)
    if args.record:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write("\n" + text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
