"""fastcnn info: what the kernels run on."""
import json


def run(args):
    import fastcnn
    info = fastcnn.info(measure_peak=True)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    openmp = info["openmp"] or {}
    print(f"fastcnn {info['version']} on {info['machine']} ({info['cpu']})")
    print(f"  ISA:        {info['isa']} (available: {', '.join(info['available_isas'])})")
    print(f"  OpenMP:     {openmp.get('library', 'not found')} {openmp.get('version') or ''}".rstrip())
    print(f"  threads:    {info['num_threads']} (physical cores: {info['physical_cores']})")
    caches = ", ".join(f"{k} {v}" for k, v in info["caches"].items())
    print(f"  caches:     {caches or 'unknown'}")
    print(f"  FMA peak:   {info['peak_gflops_1_thread']} GFLOP/s on 1 thread, "
          f"{info['peak_gflops_all_threads']} GFLOP/s on {info['num_threads']} (measured, float32)")
    return 0


def add_parser(sub):
    p = sub.add_parser("info", help="version, SIMD instruction set, OpenMP runtime, threads")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run)
