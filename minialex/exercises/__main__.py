"""python -m minialex.exercises start DIR | check OP|all DIR... [--json FILE] [--timeout S] [--jobs N]"""
import argparse
import sys

from .grade import DEFAULT_TIMEOUT
from .report import run_check
from .template import EXERCISES, start


def _parser():
    p = argparse.ArgumentParser(prog="python -m minialex.exercises", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start", help="write the exercise files into DIR")
    s.add_argument("dir")
    s.add_argument("--force", action="store_true", help="overwrite files that exist")
    c = sub.add_parser("check", help="grade DIR/OP.py of every DIR (one child process per folder and op)")
    c.add_argument("op", choices=sorted(EXERCISES) + ["all"])
    c.add_argument("dirs", nargs="*", default=["."], metavar="DIR", help="students' folders (default: .)")
    c.add_argument("--json", metavar="FILE", help="write one record per folder, op and case to FILE")
    c.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                   help=f"seconds each op of each folder may run (default {DEFAULT_TIMEOUT:g})")
    c.add_argument("--jobs", type=int, default=None, metavar="N", help="ops graded at once (default: the CPUs)")
    return p


def main(argv=None):
    p = _parser()
    args = p.parse_args(argv)
    if args.command == "start":
        written, kept = start(args.dir, args.force)
        for path in written:
            print(f"wrote {path}")
        for path in kept:
            print(f"kept {path} (it exists; --force overwrites)")
        print(f"next: fill in forward and backward, then: python -m minialex.exercises check relu {args.dir}")
        return 0
    if not args.timeout > 0:
        p.error(f"--timeout expected seconds > 0, got {args.timeout:g}")
    if args.jobs is not None and args.jobs < 1:
        p.error(f"--jobs expected an integer >= 1, got {args.jobs}")
    ops = sorted(EXERCISES) if args.op == "all" else [args.op]
    return run_check(ops, args.dirs, args.timeout, args.jobs, args.json)


if __name__ == "__main__":
    sys.exit(main())
