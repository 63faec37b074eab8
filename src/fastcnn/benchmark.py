"""Side-by-side speed of fastcnn, the numpy reference and PyTorch (when installed).

``python benchmarks/compare.py`` and ``fastcnn bench`` run this. Every figure of one table is
measured in the same process, on the same thread count; the conv suite's fastcnn and PyTorch
calls take turns over a few rounds (best_times_taking_turns, _times_against_better_format), so
that ratios stay meaningful on a shared, noisy machine. GFLOP/s always counts direct-convolution
FLOPs, 2 * N * Cout * Hout * Wout * Cin/groups * kh * kw, for every pass and every algorithm.
"""
import argparse
import contextlib
import math
import sys
import time

import numpy as np

import cconv
from fastcnn import reference

# (name, N, Cin, H, W, Cout, k, stride, pad, groups): the conv shape suite of the design.
SHAPES = [
    ("lenet-c1", 64, 1, 28, 28, 6, 5, 1, 0, 1),
    ("lenet-c2", 64, 6, 12, 12, 16, 5, 1, 0, 1),
    ("cifar-stem", 64, 3, 32, 32, 16, 3, 1, 1, 1),
    ("res20-s1", 64, 16, 32, 32, 16, 3, 1, 1, 1),
    ("res20-s2", 64, 32, 16, 16, 32, 3, 1, 1, 1),
    ("res20-s3", 64, 64, 8, 8, 64, 3, 1, 1, 1),
    ("res20-down", 64, 16, 32, 32, 32, 3, 2, 1, 1),
    ("vgg-64x56", 16, 64, 56, 56, 64, 3, 1, 1, 1),
    ("vgg-128x28", 16, 128, 28, 28, 128, 3, 1, 1, 1),
    ("pw-64-128", 32, 64, 28, 28, 128, 1, 1, 0, 1),
    ("dw-64x56", 32, 64, 56, 56, 64, 3, 1, 1, 64),
    ("imnet-stem7", 8, 3, 224, 224, 64, 7, 2, 3, 1),
    ("b1-vgg-64x56", 1, 64, 56, 56, 64, 3, 1, 1, 1),
    ("b1-stem", 1, 3, 224, 224, 32, 3, 2, 1, 1),
]
PASSES = ("forward", "backward_data", "backward_weight")


def best_time(fn, min_time=0.25, max_runs=1000):
    """Best wall time of one call, over runs that add up to at least ``min_time`` seconds (at
    most ``max_runs``: a sub-millisecond call gets the whole window too, not a few dozen runs
    that one busy moment of the machine can spoil)."""
    fn()  # warm-up: caches, packed weights, lazy initialisation
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def best_times_taking_turns(fns, min_time=0.25, rounds=3):
    """Best wall time of one call of each function, the functions taking turns: ``rounds``
    rounds, each running every function for ``min_time / rounds`` seconds. The machine's slow
    and fast moments then fall on all of them alike, and no function gets more chances at a
    quiet moment than another (the figures are compared with one another)."""
    best = [math.inf] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], best_time(fn, min_time / rounds))
    return best


def _times_against_better_format(fns, torch_fns, min_time, rounds=3):
    """Best times of ``fns`` (fastcnn's) and of PyTorch's memory formats ``torch_fns``, each
    call timed for ``min_time`` seconds in all: a first round of turns of all of them picks
    PyTorch's better format, then ``rounds - 1`` rounds time fastcnn and that format only.
    Timing both formats in every round would give PyTorch twice fastcnn's chances at a quiet
    moment of a noisy machine; this way fastcnn and the better format get the same time."""
    first = best_times_taking_turns(fns + torch_fns, min_time / rounds, rounds=1)
    times, torch_times = first[:len(fns)], first[len(fns):]
    better = torch_times.index(min(torch_times)) if torch_fns else None
    chosen = [torch_fns[better]] if torch_fns else []
    rest = best_times_taking_turns(fns + chosen, min_time * (rounds - 1) / rounds, rounds - 1)
    if torch_fns:
        torch_times[better] = min(torch_times[better], rest[-1])
    return [min(a, b) for a, b in zip(times, rest)], torch_times


class ConvProblem:
    """One shape of the suite with its data and the calls of each library for each pass."""

    def __init__(self, name, n, cin, h, w, cout, k, stride, pad, groups, algo="auto"):
        self.name, self.algo = name, algo
        self.geom = dict(stride=stride, padding=pad, dilation=1, groups=groups)
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((n, h, w, cin), dtype=np.float32)
        self.w = (rng.standard_normal((cout, cin // groups, k, k), dtype=np.float32)
                  / math.sqrt(cin // groups * k * k))
        self.b = np.zeros(cout, np.float32)
        ho = (h + 2 * pad - k) // stride + 1
        wo = (w + 2 * pad - k) // stride + 1
        self.dy = rng.standard_normal((n, ho, wo, cout), dtype=np.float32)
        self.kernel = (k, k)
        self.flops = 2.0 * n * cout * ho * wo * (cin // groups) * k * k

    def fastcnn(self, which):
        g = self.geom
        if which == "forward":
            return lambda: cconv.conv2d(self.x, self.w, self.b, **g, algo=self.algo)
        if which == "backward_data":
            return lambda: cconv.conv2d_backward_data(self.dy, self.w, self.x.shape, **g,
                                                      algo=self.algo)
        return lambda: cconv.conv2d_backward_weight(self.x, self.dy, self.kernel, **g,
                                                    algo=self.algo)

    def algorithm(self, which):
        """The algorithm fastcnn runs for this pass ('direct', 'winograd-f4', ...)."""
        return cconv.conv2d_algorithm(self.x.shape, self.w.shape, **self.geom, algo=self.algo,
                                      backward_data=which == "backward_data",
                                      backward_weight=which == "backward_weight")

    def numpy(self, which):
        g = self.geom
        if which == "forward":
            return lambda: reference.conv2d(self.x, self.w, self.b, **g)
        if which == "backward_data":
            return lambda: reference.conv2d_backward_data(self.dy, self.w, self.x.shape, **g)
        return lambda: reference.conv2d_backward_weight(self.x, self.dy, self.kernel, **g)

    def torch(self, torch, which, channels_last):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.from_numpy(self.x).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
        w = torch.from_numpy(self.w).contiguous(memory_format=fmt)
        b = torch.from_numpy(self.b)
        dy = torch.from_numpy(self.dy).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
        g = self.geom
        s, p, gr = [g["stride"]] * 2, [g["padding"]] * 2, g["groups"]
        if which == "forward":
            return lambda: torch.nn.functional.conv2d(x, w, b, g["stride"], g["padding"], 1, gr)
        mask = [which == "backward_data", which == "backward_weight", False]
        conv_backward = torch.ops.aten.convolution_backward
        return lambda: conv_backward(dy, x, w, None, s, p, [1, 1], False, [0, 0], gr, mask)


def _import_torch(threads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def _geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def run_conv_suite(threads, algo="auto", shapes=None, passes=PASSES, min_time=0.25,
                   with_numpy=True, with_torch=True, out=print, progress=None):
    """Time every (shape, pass); print a table; return the rows as dicts.

    The FMA peak is probed before every shape and its best counts for 'of peak': one probe
    taken in a busy moment would put fractions over 100%. The table is printed when the suite
    is done (its 'of peak' needs that best); ``progress`` (default: stderr) hears of each shape
    as it starts."""
    from threadpoolctl import threadpool_limits

    if progress is None:
        progress = lambda message: print(message, file=sys.stderr, flush=True)
    cconv.set_num_threads(threads)
    torch = _import_torch(threads) if with_torch else None
    peaks = []
    rows = []
    with threadpool_limits(threads):
        for spec in SHAPES:
            if shapes and spec[0] not in shapes:
                continue
            progress(f"timing {spec[0]} ...")
            peaks.append(cconv.measure_peak_gflops(threads))
            problem = ConvProblem(*spec, algo=algo)
            direct = ConvProblem(*spec, algo="direct")
            for which in passes:
                gf = lambda seconds: problem.flops / seconds / 1e9
                row = {"shape": spec[0], "pass": which, "algorithm": problem.algorithm(which)}
                # fastcnn, the direct algorithm beside it wherever the chosen one is another,
                # and PyTorch in its better memory format, taking turns
                fns = [problem.fastcnn(which)]
                if row["algorithm"].startswith("winograd"):
                    fns.append(direct.fastcnn(which))
                n_fastcnn = len(fns)
                torch_fns = ([problem.torch(torch, which, cl) for cl in (False, True)]
                             if torch is not None else [])
                with torch.no_grad() if torch is not None else contextlib.nullcontext():
                    times, torch_times = _times_against_better_format(fns, torch_fns, min_time)
                row["fastcnn"] = gf(times[0])
                row["direct"] = gf(times[1]) if n_fastcnn == 2 else None
                row["torch"] = gf(min(torch_times)) if torch is not None else None
                row["numpy"] = gf(best_time(problem.numpy(which), min_time / 5, 3)) if with_numpy else None
                row["vs_torch"] = row["fastcnn"] / row["torch"] if row["torch"] else None
                row["vs_numpy"] = row["fastcnn"] / row["numpy"] if row["numpy"] else None
                rows.append(row)
        peaks.append(cconv.measure_peak_gflops(threads))
    peak = max(peaks)
    for row in rows:
        row["of_peak"] = row["fastcnn"] / peak

    out(f"fastcnn {cconv.__version__}, ISA {cconv.get_isa()}, {threads} thread(s), algo={algo}; "
        f"measured FMA peak {peak:.0f} GFLOP/s (best of {len(peaks)} probes, lowest "
        f"{min(peaks):.0f})"
        + (f"; PyTorch {torch.__version__} (best of NCHW and channels-last)" if torch else "; PyTorch not installed"))
    header = (f"{'shape':14s} {'pass':16s} {'algorithm':12s} {'fastcnn':>8s} {'direct':>8s} "
              f"{'numpy':>8s} {'torch':>8s} {'vs torch':>9s} {'vs numpy':>9s} {'of peak':>8s}")
    out(header)
    out("-" * len(header))
    fmt = lambda v, spec=".1f", suffix="": "-" if v is None else f"{v:{spec}}{suffix}"
    for row in rows:
        out(f"{row['shape']:14s} {row['pass']:16s} {row['algorithm']:12s} "
            f"{fmt(row['fastcnn']):>8s} {fmt(row['direct']):>8s} {fmt(row['numpy']):>8s} "
            f"{fmt(row['torch']):>8s} {fmt(row['vs_torch'], '.2f', 'x'):>9s} "
            f"{fmt(row['vs_numpy'], '.1f', 'x'):>9s} {fmt(100 * row['of_peak'], '.0f', '%'):>8s}")
    out("")
    if torch is not None:
        ratios = [r["vs_torch"] for r in rows]
        worst = min(rows, key=lambda r: r["vs_torch"])
        out(f"geometric mean vs PyTorch: {_geomean(ratios):.2f}x   "
            f"(lowest {worst['vs_torch']:.2f}x: {worst['shape']} {worst['pass']})")
    slower = [r for r in rows if r["direct"] and r["fastcnn"] < r["direct"]]
    if any(r["direct"] for r in rows):
        out("slower than the direct algorithm: " + (", ".join(f"{r['shape']} {r['pass']}"
                                                              for r in slower) or "none"))
    if with_numpy:
        out(f"geometric mean vs numpy reference: {_geomean([r['vs_numpy'] for r in rows]):.1f}x")
    out("GFLOP/s = direct-convolution FLOPs / best time; 'of peak' = fastcnn / measured FMA peak.")
    return rows


# ----------------------------------------------------------------------------- whole models

MODELS = {  # name: (builder in fc.models, one image's (H, W, C), training batch, inference batches)
    "LeNet-5": ("lenet5", (28, 28, 1), 64, (1, 64)),
    "ResNet-20": ("resnet20", (32, 32, 3), 128, (1, 128)),
    "MobileNetV2": ("mobilenet_v2", (96, 96, 3), 32, (1, 32)),
    "ResNet-18": ("resnet18", (112, 112, 3), 16, (1, 16)),
}


def _model_data(name, batch, seed=0):
    shape = MODELS[name][1]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, batch)
    return x, y


def _fastcnn_model(name):
    import fastcnn as fc
    fc.manual_seed(0)
    model = getattr(fc.models, MODELS[name][0])()
    model.compile(optimizer=fc.SGD(lr=0.01, momentum=0.9), loss=fc.CrossEntropyLoss())
    return model


def _torch_model(torch, model, channels_last):
    from fastcnn._torch_twin import torch_twin
    twin = torch_twin(model)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    if channels_last:
        twin = twin.to(memory_format=torch.channels_last)
    return twin


def _torch_input(torch, x, channels_last):
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def _fastcnn_train_step(name, batch):
    model = _fastcnn_model(name)
    x, y = _model_data(name, batch)
    model.train()
    return lambda: model.train_step(x, y)


def _torch_train_step(torch, name, batch, channels_last):
    model = _fastcnn_model(name)
    twin = _torch_model(torch, model, channels_last)
    x, y = _model_data(name, batch)
    xt, yt = _torch_input(torch, x, channels_last), torch.from_numpy(y)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    twin.train()

    def step():
        optimizer.zero_grad()
        loss = loss_fn(twin(xt), yt)
        loss.backward()
        optimizer.step()
    return step


def _inference_batches(name):
    return MODELS[name][3]


def _fastcnn_times(name, threads, min_time):
    """fastcnn's training step and inference times (ms) of one model, in this process."""
    cconv.set_num_threads(threads)
    ms = lambda fn: 1e3 * best_time(fn, min_time, MODEL_MAX_RUNS)
    times = {"train": ms(_fastcnn_train_step(name, MODELS[name][2]))}
    for batch in _inference_batches(name):
        model = _fastcnn_model(name)
        model.eval()
        x, _ = _model_data(name, batch)
        times[str(batch)] = ms(lambda: model(x))
    return times


def measure_fastcnn_times(name, threads, min_time):
    """_fastcnn_times, in a fresh process when PyTorch is loaded in this one: PyTorch brings its
    own copy of the OpenMP runtime, which fastcnn's extensions would then share with its
    settings (threads that spin for milliseconds while waiting) instead of fastcnn's (a short
    spin, then sleep), so
    fastcnn is timed the way an application without PyTorch runs it."""
    import json
    import subprocess
    import sys
    if "torch" not in sys.modules:
        return _fastcnn_times(name, threads, min_time)
    code = ("import json, fastcnn.benchmark as b; "
            f"print(json.dumps(b._fastcnn_times({name!r}, {threads}, {min_time})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=1200).stdout
    return json.loads(out.strip().splitlines()[-1])


def _peak_rss_kib():
    with open("/proc/self/status") as f:
        return {line.split(":")[0]: int(line.split()[1]) for line in f
                if line.startswith(("VmHWM", "VmRSS"))}


def measure_train_memory(library, name, batch, threads, channels_last=False):
    """Peak resident memory (MiB) that two training steps add to a process, in a fresh process
    per library so that one allocator's caches cannot hide or inflate the other's."""
    import json
    import subprocess
    import sys
    code = ("import fastcnn.benchmark as b; "
            f"print(b._train_memory_child({library!r}, {name!r}, {batch}, {threads}, {channels_last}))")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=600).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return None


def _train_memory_child(library, name, batch, threads, channels_last):
    if library == "torch":
        import torch
        torch.set_num_threads(threads)
        step = _torch_train_step(torch, name, batch, channels_last)
    else:
        cconv.set_num_threads(threads)
        step = _fastcnn_train_step(name, batch)
    baseline = _peak_rss_kib()["VmRSS"]
    step()
    step()
    return round((_peak_rss_kib()["VmHWM"] - baseline) / 1024, 1)


def _ort_session(torch, model, x, threads):
    """An ONNX Runtime session of the model's PyTorch twin, or None without onnx/onnxruntime."""
    try:
        import io
        import onnxruntime as ort
        twin = _torch_model(torch, model, False).eval()
        buffer = io.BytesIO()
        torch.onnx.export(twin, (_torch_input(torch, x, False),), buffer, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        return ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    except Exception:  # onnx/onnxruntime missing or the export failed: no ORT column
        return None


# Whole-model figures are best times over min_time seconds of runs, however many that is (a
# batch-1 inference runs thousands of times): on a shared machine the best of a few runs of a
# sub-millisecond call is mostly noise.
MODEL_MAX_RUNS = 1_000_000


def run_model_suite(threads, min_time=1.5, with_torch=True, out=print, models=None):
    """Training step and inference time of whole models (``models``: names of MODELS, default
    all); times in ms, ratios = time / theirs."""
    cconv.set_num_threads(threads)
    torch = _import_torch(threads) if with_torch else None
    out(f"\nWhole models, {threads} thread(s): time per call in ms (best of runs), peak memory of "
        f"a training step in MiB; 'x torch' / 'x ORT' = fastcnn's time (or memory) / theirs")
    header = (f"{'model':10s} {'task':22s} {'fastcnn':>9s} {'torch':>9s} {'ORT':>9s} "
              f"{'x torch':>8s} {'x ORT':>7s}")
    out(header)
    out("-" * len(header))
    rows = []

    def report(name, task, fc_value, torch_value=None, ort_value=None, unit="ms"):
        row = dict(model=name, task=task, fastcnn=fc_value, torch=torch_value, ort=ort_value, unit=unit,
                   vs_torch=fc_value / torch_value if torch_value else None,
                   vs_ort=fc_value / ort_value if ort_value else None)
        rows.append(row)
        f = lambda v, spec, suffix="": "-" if v is None else format(v, spec) + suffix
        out(f"{name:10s} {task:22s} {f(fc_value, '.3f'):>9s} {f(torch_value, '.3f'):>9s} "
            f"{f(ort_value, '.3f'):>9s} {f(row['vs_torch'], '.2f', 'x'):>8s} "
            f"{f(row['vs_ort'], '.2f', 'x'):>7s}")

    for name, (_, shape, train_batch, _) in MODELS.items():
        if models and name not in models:
            continue
        ms = lambda fn: 1e3 * best_time(fn, min_time, MODEL_MAX_RUNS)
        fc_times = measure_fastcnn_times(name, threads, min_time)
        fc_step = fc_times["train"]
        torch_step = None
        if torch is not None:
            torch_step = min(ms(_torch_train_step(torch, name, train_batch, cl)) for cl in (False, True))
        report(name, f"train step, batch {train_batch}", fc_step, torch_step)
        for batch in _inference_batches(name):
            model = _fastcnn_model(name)
            model.eval()
            x, _ = _model_data(name, batch)
            fc_ms = fc_times[str(batch)]
            torch_ms = ort_ms = None
            if torch is not None:
                with torch.no_grad():
                    times = []
                    for cl in (False, True):
                        twin = _torch_model(torch, model, cl).eval()
                        xt = _torch_input(torch, x, cl)
                        times.append(ms(lambda: twin(xt)))
                    torch_ms = min(times)
                session = _ort_session(torch, model, x, threads)
                if session is not None:
                    feed = {"x": np.ascontiguousarray(x.transpose(0, 3, 1, 2))}
                    ort_ms = ms(lambda: session.run(None, feed))
            report(name, f"inference, batch {batch}", fc_ms, torch_ms, ort_ms)
        fc_mem = measure_train_memory("fastcnn", name, train_batch, threads)
        torch_mem = None
        if torch is not None:
            mems = [measure_train_memory("torch", name, train_batch, threads, cl) for cl in (False, True)]
            mems = [m for m in mems if m is not None]
            torch_mem = min(mems) if mems else None
        if fc_mem is not None:
            report(name, "train step peak MiB", fc_mem, torch_mem, unit="MiB")
    return rows


def build_parser():
    parser = argparse.ArgumentParser(prog="compare.py", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=cconv.get_num_threads(),
                        help="threads for every library (default: fastcnn's default)")
    parser.add_argument("--algo", default="auto", choices=["auto", "direct", "winograd"],
                        help="fastcnn's convolution algorithm (every pass)")
    parser.add_argument("--shapes", default="", help="comma-separated shape names (default: all)")
    parser.add_argument("--passes", default=",".join(PASSES), help="comma-separated passes")
    parser.add_argument("--min-time", type=float, default=0.25, help="seconds of runs per figure")
    parser.add_argument("--no-numpy", action="store_true", help="skip the numpy reference")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--models", action="store_true",
                        help="whole models (training step, inference, memory) instead of the "
                             "convolution suite")
    parser.add_argument("--model", default="", help=f"with --models: comma-separated names "
                                                    f"(default: all of {', '.join(MODELS)})")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.models:
        names = [m for m in args.model.split(",") if m]
        unknown = set(names) - set(MODELS)
        if unknown:
            raise SystemExit(f"unknown models: {', '.join(sorted(unknown))}")
        run_model_suite(args.threads, max(args.min_time, 1.5), not args.no_torch, models=names)
        return 0
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = set(shapes) - {s[0] for s in SHAPES}
    if unknown:
        raise SystemExit(f"unknown shapes: {', '.join(sorted(unknown))}")
    run_conv_suite(args.threads, args.algo, shapes, tuple(p for p in args.passes.split(",") if p),
                   args.min_time, not args.no_numpy, not args.no_torch)
    return 0
