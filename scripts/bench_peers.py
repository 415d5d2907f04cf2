#!/usr/bin/env python3
"""Compare iem-simd with PyTorch in one run, on this machine, with 2 threads.

Set-up (once; a few GB):
    python3 -m venv .venv-bench && .venv-bench/bin/pip install torch numpy
Run:
    .venv-bench/bin/python scripts/bench_peers.py                # iem-simd: GEMM, softmax family
    .venv-bench/bin/python scripts/bench_peers.py --activations  # iem-activations: every activation
It builds and runs `cargo run --release -p iem-simd --example gemm_probe`, then times
torch.matmul and the softmax-family forward+backward (eager autograd) on the same shapes,
interleaved in the same process run, and prints GFLOP/s, % of the measured FMA peak and the
ratio to PyTorch.
"""
import json, subprocess, time, platform, os, sys

import torch

torch.set_num_threads(2)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timeit(f, min_secs=0.3):
    f()
    iters = 1
    while True:
        t = time.perf_counter()
        for _ in range(iters):
            f()
        if time.perf_counter() - t > min_secs / 5:
            break
        iters *= 2
    v = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(iters):
            f()
        v.append((time.perf_counter() - t) / iters)
    v.sort()
    return v[2]


def torch_gemm(m, k, n):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(m, k, generator=g) - 0.5
    b = torch.rand(k, n, generator=g) - 0.5
    c = torch.empty(m, n)
    return timeit(lambda: torch.matmul(a, b, out=c))


def torch_act(name, r, cols):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(r, cols, generator=g) * 5 - 2.5).requires_grad_(True)
    gr = torch.rand(r, cols, generator=g) - 0.5

    def f():
        x.grad = None
        if name == "softmax":
            y = torch.softmax(x, dim=1)
        elif name == "log_softmax":
            y = torch.log_softmax(x, dim=1)
        else:
            y = x * torch.softmax(x, dim=1)
        y.backward(gr)

    return timeit(f)


def torch_activation(name, r, cols):
    """Forward + backward of one activation in PyTorch eager autograd, written the obvious way."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(r, cols, generator=g) * 6 - 3).requires_grad_(True)
    k = cols
    m = 2

    def sparsemax(z):
        zs, _ = torch.sort(z, dim=1, descending=True)
        rng = torch.arange(1, k + 1, dtype=z.dtype)
        cs = zs.cumsum(1)
        sup = (1 + rng * zs) > cs
        kz = sup.sum(1, keepdim=True)
        tau = (cs.gather(1, kz - 1) - 1) / kz
        return torch.clamp(z - tau, min=0)

    def entmax15(z):
        z = (z - z.max(1, keepdim=True).values) / 2
        zs, _ = torch.sort(z, dim=1, descending=True)
        rho = torch.arange(1, k + 1, dtype=z.dtype)
        mean = zs.cumsum(1) / rho
        mean_sq = (zs ** 2).cumsum(1) / rho
        ss = rho * (mean_sq - mean ** 2)
        delta = torch.clamp((1 - ss) / rho, min=0)
        tau = mean - torch.sqrt(delta)
        sup = (tau <= zs).sum(1, keepdim=True)
        tau_star = tau.gather(1, sup - 1)
        return torch.clamp(z - tau_star, min=0) ** 2

    fns = {
        "relu": torch.relu,
        "abs": torch.abs,
        "softmax": lambda z: torch.softmax(z, 1),
        "softmax_learned_tau": None,
        "log_softmax": lambda z: torch.log_softmax(z, 1),
        "nls": lambda z: -torch.log_softmax(-z, 1),
        "solu": lambda z: z * torch.softmax(z, 1),
        "grouped_softmax_m2": lambda z: torch.softmax(z.view(r, -1, 2), 2).view(r, k),
        "grouped_softmax_m8": lambda z: torch.softmax(z.view(r, -1, 8), 2).view(r, k),
        "grouped_solu_m2": lambda z: (z.view(r, -1, 2) * torch.softmax(z.view(r, -1, 2), 2)).view(r, k),
        "sparsemax": sparsemax,
        "entmax15": entmax15,
        "lwta_m2": lambda z: (z.view(r, -1, 2) * torch.nn.functional.one_hot(z.view(r, -1, 2).argmax(2), 2)).view(r, k),
        "maxout_m2": lambda z: z.view(r, -1, 2).max(2).values,
        "triangle": lambda z: torch.relu(z.mean(1, keepdim=True) - z),
        "layer_norm": None,
    }
    if name.startswith("top"):
        kk = int(name[3:])
        f = lambda z: z * torch.zeros_like(z).scatter(1, z.topk(kk, 1).indices, 1.0)
    elif name == "softmax_learned_tau":
        theta = torch.zeros((), requires_grad=True)
        f = lambda z: torch.softmax(z / theta.exp(), 1)
    elif name == "layer_norm":
        ln = torch.nn.LayerNorm(k)
        f = ln
    else:
        f = fns.get(name)
    if f is None:
        return None

    def run():
        x.grad = None
        y = f(x)
        y.backward(torch.full_like(y, 0.5))

    return timeit(run)


def main():
    out = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "-p", "iem-simd", "--example", "gemm_probe"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    rows = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    peak = next(r for r in rows if r["kind"] == "peak")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"iem ISA {peak['isa']}; single-core FMA peak {peak['gflops']:.1f} GFLOP/s; "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads\n")
    print("| GEMM m×k×n | iem 1T GF/s | % peak | iem 2T GF/s | nalgebra 1T GF/s | torch 2T GF/s | iem 2T / torch |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"] != "gemm":
            continue
        m, k, n = r["m"], r["k"], r["n"]
        fl = 2 * m * k * n
        tt = torch_gemm(m, k, n)
        g1, g2, gn, gt = fl / r["iem_1t"] / 1e9, fl / r["iem_2t"] / 1e9, fl / r["nalgebra_1t"] / 1e9, fl / tt / 1e9
        print(f"| {m}×{k}×{n} | {g1:.1f} | {100 * g1 / peak['gflops']:.0f}% | {g2:.1f} | {gn:.1f} | {gt:.1f} | {tt / r['iem_2t']:.2f}× |")
    print("\n| fwd+bwd (2 threads) | rows×cols | iem µs | torch µs | speed-up |")
    print("|---|---|---|---|---|")
    for r in rows:
        if r["kind"] != "act":
            continue
        tt = torch_act(r["name"], r["rows"], r["cols"])
        print(f"| {r['name']} | {r['rows']}×{r['cols']} | {r['iem_2t'] * 1e6:.1f} | {tt * 1e6:.1f} | {tt / r['iem_2t']:.2f}× |")


def activations():
    out = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "-p", "iem-activations", "--example", "act_probe"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    print("\n| activation fwd+vjp (2 threads) | rows×cols | iem µs | torch eager µs | speed-up |")
    print("|---|---|---|---|---|")
    for l in out.splitlines():
        if not l.startswith("{"):
            continue
        r = json.loads(l)
        tt = torch_activation(r["name"], r["rows"], r["cols"])
        ts = "n/a" if tt is None else f"{tt * 1e6:.1f}"
        sp = "n/a" if tt is None else f"{tt / r['iem_2t']:.2f}×"
        print(f"| {r['name']} | {r['rows']}×{r['cols']} | {r['iem_2t'] * 1e6:.1f} | {ts} | {sp} |")


if __name__ == "__main__":
    if "--activations" in sys.argv:
        sys.exit(activations())
    sys.exit(main())
