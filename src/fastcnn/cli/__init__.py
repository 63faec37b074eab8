"""The ``fastcnn`` command line: one module a command, each with ``add_parser(sub)`` and
``run(args)``; the options of ``fastcnn bench`` go to benchmarks/compare.py as they are."""
import argparse
import sys

from . import attack, bench, explain, finetune, info, predict, train

COMMANDS = (info, train, predict, explain, attack, finetune, bench)


def build_parser():
    parser = argparse.ArgumentParser(prog="fastcnn", description="Fast CNNs on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"] and not {"-h", "--help"} & set(argv[1:]):
        return bench.run(argparse.Namespace(args=argv[1:]))
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
