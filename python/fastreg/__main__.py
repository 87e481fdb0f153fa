"""Command line: ``fastreg info`` (and, as they land, ``train`` and ``bench``)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastreg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the build and runtime configuration")
    args = parser.parse_args(argv)
    if args.command == "info":
        import fastreg

        fastreg.show_config()
    return 0


if __name__ == "__main__":
    sys.exit(main())
