"""Small pieces shared by the command-line tools."""
from __future__ import annotations

import argparse
import sys


def make_parser(prog: str, doc: str, example: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=doc, epilog=example,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def fail(prog: str, message: str, code: int = 2) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code
