"""python -m minialex.exercises start DIR | check OP|all [DIR]"""
import argparse
import sys

from .checks import EXERCISES, check, start


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minialex.exercises", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start", help="write the exercise files into DIR")
    s.add_argument("dir")
    s.add_argument("--force", action="store_true", help="overwrite files that exist")
    c = sub.add_parser("check", help="grade DIR/OP.py")
    c.add_argument("op", choices=sorted(EXERCISES) + ["all"])
    c.add_argument("dir", nargs="?", default=".")
    args = p.parse_args(argv)
    if args.command == "start":
        written, kept = start(args.dir, args.force)
        for path in written:
            print(f"wrote {path}")
        for path in kept:
            print(f"kept {path} (it exists; --force overwrites)")
        print(f"next: fill in forward and backward, then: python -m minialex.exercises check relu {args.dir}")
        return 0
    ops = sorted(EXERCISES) if args.op == "all" else [args.op]
    ok = True
    for op in ops:
        passed, lines = check(op, args.dir)
        ok &= passed
        print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
