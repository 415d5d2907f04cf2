#!/usr/bin/env python3
"""Compare iem-simd with PyTorch in one run, on this machine, with 2 threads.

Set-up (once; a few GB):
    python3 -m venv .venv-bench && .venv-bench/bin/pip install torch numpy
Run:
    .venv-bench/bin/python scripts/bench_peers.py                # iem-simd: GEMM, softmax family
    .venv-bench/bin/python scripts/bench_peers.py --activations  # iem-activations: every activation
    .venv-bench/bin/python scripts/bench_peers.py --train        # iem-train: steps/s (torch eager,
                                                                 # torch.compile, JAX jit if installed)
    .venv-bench/bin/python scripts/bench_peers.py --train mnist --rounds 12  # some rows, more rounds
It builds and runs `cargo run --release -p iem-simd --example gemm_probe`, then times
torch.matmul and the softmax-family forward+backward (eager autograd) on the same shapes,
interleaved in the same process run, and prints GFLOP/s, % of the measured FMA peak and the
ratio to PyTorch.
"""
import json, subprocess, time, platform, os, statistics, sys

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


# Training rates: the best of ROUNDS timed windows of WINDOW_SECS each, for every framework
# alike, the frameworks' windows interleaved round by round (ours, eager, compile, JAX, ours,
# ...), so that every framework samples the same stretch of this shared machine's changing
# speed and a neighbour's burst does not decide a ratio.
ROUNDS = 5
WINDOW_SECS = 0.5


def torch_train(model_name, act, sizes, batch, mode):
    """A function timing one window of the same MLP, loss and optimiser in PyTorch (eager or
    torch.compile) and returning its steps/s; None if the mode fails here."""
    torch.manual_seed(1)
    d_in, h1, h2, c = sizes

    def make_act():
        if act == "relu":
            return torch.nn.ReLU()
        if act == "softmax":
            return torch.nn.Softmax(dim=1)
        if act == "log_softmax":
            return torch.nn.LogSoftmax(dim=1)
        if act == "solu":
            class Solu(torch.nn.Module):
                def forward(self, z):
                    return z * torch.softmax(z, 1)
            return Solu()
        if act == "grouped_softmax_m8":
            class Grouped(torch.nn.Module):
                def forward(self, z):
                    return torch.softmax(z.view(z.shape[0], -1, 8), 2).view(z.shape)
            return Grouped()
        raise ValueError(act)

    net = torch.nn.Sequential(torch.nn.Linear(d_in, h1), make_act(), torch.nn.Linear(h1, h2), make_act(), torch.nn.Linear(h2, c))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    n = batch * 8
    x = (torch.arange(n * d_in, dtype=torch.float32).view(n, d_in) % 97) / 97.0 - 0.5
    y = torch.arange(n) % c
    lossf = torch.nn.CrossEntropyLoss()

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = lossf(net(xb), yb)
        loss.backward()
        opt.step()

    if mode == "compile":
        try:
            # A fresh compiler cache per model: otherwise dynamo's recompile limit (8) is
            # reached over the 15 configurations and later ones silently run eager.
            torch._dynamo.reset()
            fwd = torch.compile(net)
        except Exception:
            return None

        def step(xb, yb):  # noqa: F811
            opt.zero_grad(set_to_none=True)
            loss = lossf(fwd(xb), yb)
            loss.backward()
            opt.step()
    try:
        for i in range(8):
            step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
    except Exception:
        return None
    def window():
        t = time.perf_counter()
        steps = 0
        while time.perf_counter() - t < WINDOW_SECS:
            for i in range(8):
                step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
            steps += 8
        return steps / (time.perf_counter() - t)

    return window


def jax_train(sizes, act, batch):
    """A function timing one window of the same MLP in JAX with jit (Adam written out) and
    returning its steps/s, or None without JAX."""
    try:
        import jax
        import jax.numpy as jnp
    except Exception:
        return None
    d_in, h1, h2, c = sizes
    key = jax.random.PRNGKey(1)
    ks = jax.random.split(key, 3)

    def lin(k, i, o):
        a = 1.0 / (i ** 0.5)
        k1, k2 = jax.random.split(k)
        return (jax.random.uniform(k1, (i, o), minval=-a, maxval=a), jax.random.uniform(k2, (o,), minval=-a, maxval=a))

    params = [lin(ks[0], d_in, h1), lin(ks[1], h1, h2), lin(ks[2], h2, c)]

    def f(z):
        if act == "relu":
            return jax.nn.relu(z)
        if act == "softmax":
            return jax.nn.softmax(z, axis=1)
        if act == "log_softmax":
            return jax.nn.log_softmax(z, axis=1)
        if act == "solu":
            return z * jax.nn.softmax(z, axis=1)
        return jax.nn.softmax(z.reshape(z.shape[0], -1, 8), axis=2).reshape(z.shape)

    def loss(p, xb, yb):
        h = xb
        for i, (w, b) in enumerate(p):
            h = h @ w + b
            if i < 2:
                h = f(h)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h, 1), yb[:, None], 1))

    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)

    @jax.jit
    def step(p, m, v, t, xb, yb):
        g = jax.grad(loss)(p, xb, yb)
        m = jax.tree_util.tree_map(lambda a, b: 0.9 * a + 0.1 * b, m, g)
        v = jax.tree_util.tree_map(lambda a, b: 0.999 * a + 0.001 * b * b, v, g)
        p = jax.tree_util.tree_map(lambda w, a, b: w - 1e-3 * (a / (1 - 0.9 ** t)) / (jnp.sqrt(b / (1 - 0.999 ** t)) + 1e-8), p, m, v)
        return p, m, v

    n = batch * 8
    x = (jnp.arange(n * d_in, dtype=jnp.float32).reshape(n, d_in) % 97) / 97.0 - 0.5
    y = jnp.arange(n) % c
    t_ = 1.0
    for i in range(8):
        params, m, v = step(params, m, v, t_, x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
        t_ += 1
    jax.block_until_ready(params)
    state = [params, m, v, t_]

    def window():
        params, m, v, t_ = state
        t = time.perf_counter()
        steps = 0
        while time.perf_counter() - t < WINDOW_SECS:
            for i in range(8):
                params, m, v = step(params, m, v, t_, x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
                t_ += 1
            steps += 8
        jax.block_until_ready(params)
        state[:] = [params, m, v, t_]
        return steps / (time.perf_counter() - t)

    return window


def cpu_times():
    """(steal, total) jiffies of all CPUs from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return v[7], sum(v)
    except Exception:
        return None


def steal_pct(before, after):
    """Share of the CPU time the hypervisor gave to other guests between two readings."""
    if before is None or after is None or after[1] == before[1]:
        return "n/a"
    return f"{100.0 * (after[0] - before[0]) / (after[1] - before[1]):.0f}%"


def training():
    # Build once, then time our side of each row right before the peers' side of the same
    # row, so that a change in the machine's speed during the run moves a whole row, not
    # one column.
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "iem-train", "--example", "train_probe"],
                   cwd=ROOT, check=True)
    probe = os.path.join(ROOT, "target", "release", "examples", "train_probe")
    sizes = {"2d": (2, 64, 64, 4), "digits": (64, 256, 256, 10), "mnist": (784, 256, 256, 10)}
    acts = ["relu", "softmax", "solu", "log_softmax", "grouped_softmax_m8"]
    # "iem / fastest peer" compares each framework's best window. "round median" is the
    # median over rounds of our window's rate over the fastest peer window of the same
    # round — windows seconds apart, so a slow stretch of the shared machine moves both
    # sides of each ratio; it does not rest on one lucky window. The last column: CPU time
    # stolen by the hypervisor during the row's timed windows (a shared host's load; rows
    # with much steal are noisier).
    print("| model | activation | batch | iem steps/s | torch eager | torch.compile | JAX jit | iem / fastest peer | round median | steal |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    # Optional model names after --train (e.g. `--train mnist`) restrict the rows;
    # `--rounds N` times N interleaved rounds instead of ROUNDS (more rounds: each
    # framework's best comes closer to its speed on a calm machine).
    only = [a for a in sys.argv[sys.argv.index("--train") + 1:] if a in sizes] if "--train" in sys.argv else []
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else ROUNDS
    for model in sizes:
        if only and model not in only:
            continue
        for act in acts:
            batch = 128 if model == "digits" else 256
            sz = sizes[model]
            windows = [torch_train(model, act, sz, batch, "eager"),
                       torch_train(model, act, sz, batch, "compile"),
                       jax_train(sz, act, batch)]
            best = [None, None, None]
            ours = 0.0
            per_round = []
            env = dict(os.environ, IEM_PROBE_WINDOWS="1")
            t0 = cpu_times()
            for _ in range(rounds):
                # Our side: one probe process timing one window (after its warm-up).
                out = subprocess.run([probe, model, act], cwd=ROOT, check=True, capture_output=True, text=True,
                                     env=env).stdout
                r = next(json.loads(l) for l in out.splitlines() if l.startswith("{"))
                ours = max(ours, r["iem_steps_per_s"])
                this_round = []
                for k, w in enumerate(windows):
                    if w is not None:
                        try:
                            v = w()
                        except Exception:
                            windows[k] = None
                            continue
                        best[k] = v if best[k] is None else max(best[k], v)
                        this_round.append(v)
                if this_round:
                    per_round.append(r["iem_steps_per_s"] / max(this_round))
            r["iem_steps_per_s"] = ours
            steal = steal_pct(t0, cpu_times())
            e, c, j = best
            peers = [p for p in (e, c, j) if p]
            fmt = lambda v: "n/a" if v is None else f"{v:.0f}"
            ratio = f"{r['iem_steps_per_s'] / max(peers):.2f}×" if peers else "n/a"
            paired = f"{statistics.median(per_round):.2f}×" if per_round else "n/a"
            print(f"| {r['model']} | {r['activation']} | {r['batch']} | {r['iem_steps_per_s']:.0f} | {fmt(e)} | {fmt(c)} | {fmt(j)} | {ratio} | {paired} | {steal} |",
                  flush=True)


if __name__ == "__main__":
    if "--train" in sys.argv:
        sys.exit(training())
    if "--activations" in sys.argv:
        sys.exit(activations())
    sys.exit(main())
