"""pytest-benchmark suite: every shape of the conv suite and every pass, fastcnn and the numpy
reference side by side (group by shape and pass to compare them).

    pip install ".[bench]"
    python -m pytest benchmarks/test_bench_conv.py --benchmark-group-by=param:shape,param:pass
    python -m pytest benchmarks/test_bench_conv.py -k "fastcnn"        # fastcnn only

GFLOP/s of each row is in its extra_info (direct-convolution FLOPs over the mean time).
"""
import pytest

from fastcnn.benchmark import PASSES, SHAPES, ConvProblem

_problems = {}


def _problem(spec):
    if spec[0] not in _problems:
        _problems[spec[0]] = ConvProblem(*spec)
    return _problems[spec[0]]


@pytest.mark.parametrize("impl", ["fastcnn", "numpy"])
@pytest.mark.parametrize("pass_", PASSES, ids=list(PASSES))
@pytest.mark.parametrize("spec", SHAPES, ids=[s[0] for s in SHAPES])
def test_conv(benchmark, spec, pass_, impl):
    problem = _problem(spec)
    fn = problem.fastcnn(pass_) if impl == "fastcnn" else problem.numpy(pass_)
    benchmark.group = f"{spec[0]} {pass_}"
    benchmark.extra_info.update(shape=spec[0], pass_=pass_, impl=impl)
    if impl == "numpy":  # the reference is slow on the big shapes: a few rounds are enough
        benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    else:
        benchmark(fn)
    benchmark.extra_info["gflops"] = round(problem.flops / benchmark.stats.stats.mean / 1e9, 1)
