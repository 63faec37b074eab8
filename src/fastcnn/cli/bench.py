"""fastcnn bench: benchmarks/compare.py, or the installed suite's engine."""
import sys


def _find_compare():
    from pathlib import Path
    here = Path(__file__).resolve()
    for root in (Path.cwd(), here.parents[3]):   # the checkout: src/fastcnn/cli/bench.py
        candidate = root / "benchmarks" / "compare.py"
        if candidate.is_file():
            return candidate
    return None


def run(args):
    import subprocess
    script = _find_compare()
    if script is not None:
        return subprocess.call([sys.executable, str(script)] + list(args.args))
    try:  # an installed package carries the suite's engine without the benchmarks/ folder
        from fastcnn.benchmark import main as bench_main
    except ImportError:
        print("fastcnn bench: the benchmark suite is not installed yet (no benchmarks/compare.py "
              "in this checkout or the current folder).", file=sys.stderr)
        return 1
    return bench_main(list(args.args))


def add_parser(sub):
    p = sub.add_parser("bench", help="run benchmarks/compare.py (fastcnn vs numpy vs PyTorch)",
                       description="Run the benchmark comparison, when the benchmark suite is present.")
    p.add_argument("args", nargs="*", help="options passed to compare.py as they are, e.g. "
                   "--shapes lenet-c1,res20-s1 --threads 1 (python benchmarks/compare.py --help)")
    p.set_defaults(func=run)
