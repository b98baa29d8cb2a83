"""Speed and memory of the ST-point and TimesNet layers.

* ``STPointFormer`` forward + backward over ``P = T * N`` ST-points (``T = 12``, grids up to
  ``32 x 32`` -> ``P = 12 288``) with 40 % missing points: wall time and **peak memory**. Peak
  memory is the growth of the process's peak resident set (``VmHWM`` in ``/proc/self/status``,
  reset through ``/proc/self/clear_refs``) during one forward + backward, so it counts every
  CPU allocation, torch's included; Linux only (elsewhere it is reported as ``null``). The
  script re-executes itself with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc serves every
  block >= 64 KiB with ``mmap`` and returns it on ``free``: without it, freed heap pages stay
  resident and later peaks are invisible to ``VmHWM``. For
  contrast, the same layer is also run with PyTorch's *math* attention kernel, which
  materialises the ``[B, heads, P, P]`` attention matrix (only for the smaller ``P``).
* ``TimesBlock`` throughput (series per second, forward and forward + backward) and the speed-up
  of the merged Inception kernel over the literal average of ``m`` convolutions.

With ``--device cuda`` the layers run on the GPU: times are taken after
``torch.cuda.synchronize()`` and peak memory is the growth of
``torch.cuda.max_memory_allocated()`` (reset before the call), i.e. every tensor the caching
allocator hands out, the attention workspace included.

Prints a markdown table and writes ``benchmarks/results/layers.json`` (``layers_cuda.json``
with ``--device cuda``; ``--device auto`` picks CUDA when present; on CUDA TF32 stays off
unless ``--tf32``). Run: ``python benchmarks/layers.py [--quick] [--device cuda|auto]``
(well under 2 minutes on a 2-core CPU).
"""
import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from torch_stgen.nn import STPointFormer, TimesBlock
from torch_stgen.experiments import add_device_arguments, resolve_device

RESULTS = Path(__file__).resolve().parent / "results" / "layers.json"


def _status_kb(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


DEVICE = torch.device("cpu")


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def measure(fn, reps=1):
    """Median wall time (s) of ``fn`` and the peak-memory growth (MiB) of its first call
    (peak RSS on the CPU, ``max_memory_allocated`` on CUDA)."""
    gc.collect()
    if DEVICE.type == "cuda":
        _sync()
        torch.cuda.reset_peak_memory_stats(DEVICE)
        base = torch.cuda.memory_allocated(DEVICE)
    else:
        can_reset = _reset_peak()
        base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    fn()
    _sync()
    times = [time.perf_counter() - t0]
    if DEVICE.type == "cuda":
        mem = (torch.cuda.max_memory_allocated(DEVICE) - base) / 2**20
    else:
        peak = _status_kb("VmHWM")
        mem = ((peak - base) / 1024 if (can_reset and base is not None and peak is not None)
               else None)
    for _ in range(reps - 1):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), mem


def bench_st_point(sides, T, batch, d_model, heads, layers, dense_max_p, reps):
    rows = []
    for side in sides:
        N = side * side
        P = T * N
        torch.manual_seed(0)
        model = STPointFormer(1, d_model=d_model, num_layers=layers, num_heads=heads,
                              history=T, grid=(side, side), ext_features=4,
                              down=(max(side // 4, 1), max(side // 4, 1))).to(DEVICE)
        x = torch.randn(batch, T, N, 1).to(DEVICE)
        mask = (torch.rand(batch, T, N, 1) > 0.4).to(DEVICE)
        ext = torch.randn(batch, T, 4).to(DEVICE)

        def step():
            model.zero_grad(set_to_none=True)
            z = model.stack(model(x, mask, ext))
            z.square().mean().backward()

        if P <= 4096:
            step()  # warm up (gradients are allocated here); the largest P runs once, cold
        for kernel in ("fused", "math"):
            if kernel == "math" and P > dense_max_p:
                continue
            ctx = sdpa_kernel(SDPBackend.MATH) if kernel == "math" else nullcontext()
            with ctx:
                sec, mem = measure(step, reps if P <= 4096 else 1)
            if kernel == "fused" and P > 4096:
                sec = measure(step, 1)[0]  # time a second, warm step
            attn_mb = batch * heads * P * P * 4 / 2**20
            rows.append(dict(layer="STPointFormer", kernel=kernel, T=T, N=N, P=P, batch=batch,
                             d_model=d_model, heads=heads, layers=layers,
                             fwd_bwd_s=round(sec, 4),
                             peak_mib=None if mem is None else round(mem, 1),
                             kib_per_point=None if mem is None else round(mem * 1024 / P, 2),
                             one_attention_matrix_mib=round(attn_mb, 1)))
            print(f"  STPointFormer {kernel:5s} P={P:6d}: {sec:.3f} s, peak {mem} MiB",
                  flush=True)
        del model, x, mask, ext
    return rows


def bench_times(batch, T, d_model, top_k, num_kernels, reps):
    torch.manual_seed(0)
    block = TimesBlock(T, d_model=d_model, d_ff=d_model, top_k=top_k,
                       num_kernels=num_kernels).to(DEVICE)
    x = torch.randn(batch, T, d_model).to(DEVICE).requires_grad_()
    rows = []

    def fwd():
        with torch.no_grad():
            block(x)

    def fwd_bwd():
        block.zero_grad(set_to_none=True)
        block(x).square().mean().backward()

    fwd_bwd()
    merged = {}
    for variant in ("merged", "branches"):
        if variant == "branches":  # the literal average of the m convolutions
            for inc in (block.conv[0], block.conv[2]):
                inc.forward = inc.forward_branches
        for name, fn in (("forward", fwd), ("forward+backward", fwd_bwd)):
            sec, mem = measure(fn, reps)
            rows.append(dict(layer="TimesBlock", inception=variant, mode=name, batch=batch,
                             T=T, d_model=d_model, top_k=top_k, num_kernels=num_kernels,
                             seconds=round(sec, 4), series_per_s=round(batch / sec, 1),
                             peak_mib=None if mem is None else round(mem, 1)))
            if variant == "merged":
                merged[name] = sec
            else:
                rows[-1]["merged_speedup"] = round(sec / merged[name], 2)
            print(f"  TimesBlock {variant:8s} {name:16s}: {batch / sec:.1f} series/s", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    add_device_arguments(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default: results/layers.json, layers_cuda.json "
                             "on CUDA)")
    args = parser.parse_args()
    global DEVICE
    try:
        DEVICE = resolve_device(args.device, args.tf32)
    except ValueError as err:
        parser.error(str(err))
    if args.out is None:
        args.out = RESULTS if DEVICE.type == "cpu" else RESULTS.with_name("layers_cuda.json")
    if sys.platform.startswith("linux") and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    sides = [4, 8, 16] if args.quick else [8, 16, 32]
    if DEVICE.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(DEVICE)}")
    print("STPointFormer (T = 12, d_model 64, 4 heads, 2 layers, batch 1, 40 % missing)")
    st_rows = bench_st_point(sides, T=12, batch=1, d_model=64, heads=4, layers=2,
                             dense_max_p=3072, reps=3)
    print("TimesBlock (d_model 64, top_k 5, 6 kernels)")
    tb_rows = bench_times(batch=4 if args.quick else 8, T=96, d_model=64, top_k=5,
                          num_kernels=6, reps=2)

    fused = [r for r in st_rows if r["kernel"] == "fused" and r["peak_mib"]]
    summary = {}
    if len(fused) >= 2:
        lo, hi = fused[0], fused[-1]
        summary = dict(P_ratio=hi["P"] / lo["P"],
                       peak_memory_ratio=round(hi["peak_mib"] / lo["peak_mib"], 2),
                       time_ratio=round(hi["fwd_bwd_s"] / lo["fwd_bwd_s"], 2),
                       dense_attention_matrix_ratio=(hi["P"] / lo["P"]) ** 2)

    print("\n| layer | kernel | P = T*N | fwd+bwd s | peak MiB | KiB/point | one PxP matrix MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in st_rows:
        print(f"| STPointFormer | {r['kernel']} | {r['P']} | {r['fwd_bwd_s']} | {r['peak_mib']} | "
              f"{r['kib_per_point']} | {r['one_attention_matrix_mib']} |")
    print("\n| layer | inception | mode | batch x T x d | series/s | merged speed-up |")
    print("|---|---|---|---|---:|---:|")
    for r in tb_rows:
        print(f"| TimesBlock | {r['inception']} | {r['mode']} | {r['batch']}x{r['T']}x"
              f"{r['d_model']} | {r['series_per_s']} | {r.get('merged_speedup', '')} |")
    if summary:
        print(f"\nSTPointFormer fused kernel, P x{summary['P_ratio']:.0f}: peak memory "
              f"x{summary['peak_memory_ratio']} (a dense P x P attention matrix would grow "
              f"x{summary['dense_attention_matrix_ratio']:.0f}), time x{summary['time_ratio']}")
    total = time.perf_counter() - t_start
    print(f"total {total:.1f} s")

    result = dict(benchmark="layers", quick=args.quick, total_seconds=round(total, 1),
                  torch=torch.__version__, threads=torch.get_num_threads(),
                  device=str(DEVICE), device_name=(torch.cuda.get_device_name(DEVICE)
                                                   if DEVICE.type == "cuda" else None),
                  cpu_count=os.cpu_count(), platform=platform.platform(),
                  memory_method=("growth of torch.cuda.max_memory_allocated" if
                                 DEVICE.type == "cuda" else
                                 "peak RSS growth (VmHWM after clear_refs=5), "
                                 "MALLOC_MMAP_THRESHOLD_=" + os.environ.get(
                                     "MALLOC_MMAP_THRESHOLD_", "unset")),
                  load_average=os.getloadavg() if hasattr(os, "getloadavg") else None,
                  st_point=st_rows, st_point_summary=summary, times_block=tb_rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
