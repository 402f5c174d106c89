"""Small pieces shared by the command-line tools, and the one exit-code contract.

Every CLI: 0 all done; 1 done, but some inputs failed (each reported); 2 nothing done (usage,
weights, artifact, environment, or an unexpected error); 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM: handled like Ctrl-C, the clean-up runs and a message is printed).
No traceback reaches the user: `--debug` (accepted by every CLI) prints it as well.

Numeric options are validated where they are parsed, by the argparse types below (`positive_int`,
`nonnegative_int`, `fraction`, ...): a bad value is a usage error (exit 2, one line) before any work.
"""
from __future__ import annotations

import argparse
import contextvars
import functools
import math
import os
import signal
import sys
import traceback

from cmunext_edge.capabilities import MAX_BATCH, MAX_COUNT, MAX_SECONDS, MAX_SIDE, MAX_THREADS
from cmunext_edge.fileio import printable

EXIT_OK, EXIT_PARTIAL, EXIT_NOTHING, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
EXIT_BROKEN_PIPE = 141          # 128 + SIGPIPE, as a shell reports a reader that left (| head)
DEBUG_HELP = "on an error, also print the Python traceback"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that every clean-up path runs."""


# --- argparse types: one place for every numeric option's range --------------------------------
def _number(cast, low=None, high=None, low_open=False, high_open=False, what="a number"):
    def parse(text: str):
        try:
            value = cast(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"{text} is out of range: {_range(low, high, low_open, high_open)}")
        if high is not None and (value > high or (high_open and value == high)):
            raise argparse.ArgumentTypeError(f"{text} is out of range: {_range(low, high, low_open, high_open)}")
        return value
    parse.__name__ = what          # argparse names the type in some messages
    return parse


def _range(low, high, low_open, high_open) -> str:
    if high is None:
        return f"must be {'>' if low_open else '>='} {low}"
    return f"must lie in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def int_range(low: int | None = None, high: int | None = None):
    """An argparse type: an integer within [low, high]."""
    return _number(int, low, high, what="an integer")


def float_range(low: float | None = None, high: float | None = None, low_open=False, high_open=False):
    """An argparse type: a finite number within the range (open ends where asked)."""
    return _number(float, low, high, low_open, high_open, what="a number")


positive_int = int_range(1, MAX_COUNT)         # counts: images, iterations, epochs
size_limit = int_range(1, 2 ** 40)             # --max-pixels, --max-bytes: limits, not counts of work
nonnegative_int = int_range(0, MAX_COUNT)      # warm-up calls, "0 = default" options
port_number = int_range(1, 65535)
thread_count = int_range(1, MAX_THREADS)       # threads, workers, actors, replicas, streams
threads_or_default = int_range(0, MAX_THREADS)  # 0 = the runtime's default
batch_size = int_range(1, MAX_BATCH)
seed = int_range(0, 2**32 - 1)                 # what numpy's and torch's generators take from every caller
positive_float = float_range(0.0, low_open=True)
nonnegative_float = float_range(0.0)
seconds = float_range(0.0, MAX_SECONDS)        # durations (a day at most)
learning_rate = float_range(0.0, 10.0, low_open=True)
fraction = float_range(0.0, 1.0, low_open=True, high_open=True)     # strictly between 0 and 1


def network_side(text: str) -> int:
    """An argparse type: a network input side, a positive multiple of 16 (four 2x2 max-pools)."""
    value = int_range(16, MAX_SIDE)(text)
    if value % 16:
        raise argparse.ArgumentTypeError(f"{text} is not a multiple of 16 (CMUNeXt has four 2x2 max-pools)")
    return value


def device_name(text: str) -> str:
    """An argparse type: a device name some backend knows (a typo is a usage error, exit 2, before
    anything runs; a known device the machine lacks is left to the backend: fallback or error)."""
    from cmunext_edge.runtime.registry import device_problem
    problem = device_problem(text.strip())
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text.strip()


def nonempty_path(text: str) -> str:
    """An argparse type: a path, not empty (Path("") would be the current folder, for an output
    and an input alike)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a path")
    return text


output_path = input_path = nonempty_path


def csv_of(cast):
    """An argparse type: a comma list, each item parsed by `cast` (e.g. csv_of(positive_int))."""
    def parse(text: str):
        items = tuple(cast(v.strip()) for v in text.split(",") if v.strip())
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r} is an empty list")
        return items
    return parse


class Parser(argparse.ArgumentParser):
    """argparse held to the exit-code contract's one line: a usage error prints
    `prog: error: ... (see prog --help)` and exits 2, without the usage block above it."""

    def error(self, message):
        self.exit(EXIT_NOTHING, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def make_parser(prog: str, doc: str, example: str) -> argparse.ArgumentParser:
    p = Parser(prog=prog, description=doc, epilog=example, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug(p)
    return p


def add_debug(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Show --debug in the help (cli_main strips it before the parser sees it)."""
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


_DEBUG = contextvars.ContextVar("cmunext_debug", default=False)    # --debug of the running CLI (cli_main)


def fail(prog: str, message: str, code: int = EXIT_NOTHING) -> int:
    """The one error line; with --debug, called while an exception is handled (a CLI that catches
    its own errors), that exception's traceback first."""
    if _DEBUG.get() and sys.exc_info()[1] is not None:
        traceback.print_exc()
    print(f"{prog}: error: {printable(message)}", file=sys.stderr)
    return code


def _expected() -> tuple[type, ...]:
    """Errors whose message is the whole story (no 'unexpected' label)."""
    from cmunext_edge._deps import MissingDependencyError
    from cmunext_edge.artifacts.integrity import IntegrityError
    from cmunext_edge.device.bundle import BundleError
    from cmunext_edge.runtime.base import BackendError
    import tarfile
    return (MissingDependencyError, IntegrityError, BackendError, BundleError, tarfile.TarError, ValueError,
            OSError, ImportError)


def error_message(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return f"a file ends too early: damaged or truncated input{f' ({exc})' if str(exc) else ''}"
    if isinstance(exc, _expected()):
        return (str(exc) or type(exc).__name__).strip().splitlines()[0]
    first = (str(exc).strip().splitlines() or [""])[0]
    return (f"unexpected {type(exc).__name__}: {first} (nothing was done; rerun with --debug for the "
            f"traceback and report it)")


def sigterm_as_interrupt():
    """While the CLI runs in the main thread, SIGTERM raises `Terminated` (a KeyboardInterrupt)."""
    from cmunext_edge.export.staging import sigterm_raises
    return sigterm_raises(lambda: Terminated("terminated (SIGTERM)"), reraise_at_exit=True)


def by_sigterm(exc: BaseException) -> bool:
    """An interrupt that SIGTERM raised: the CLI's own (`Terminated`) or a library's handler that
    names the signal (`signum`, e.g. an export's staging clean-up)."""
    return isinstance(exc, Terminated) or getattr(exc, "signum", None) == signal.SIGTERM


def interrupted_code(exc: BaseException) -> int:
    return EXIT_TERMINATED if by_sigterm(exc) else EXIT_INTERRUPTED


def cli_main(prog: str):
    """Decorate a CLI `main(argv) -> int` with the exit-code contract, --debug and SIGTERM handling."""
    def decorate(main):
        @functools.wraps(main)
        def wrapper(argv=None) -> int:
            argv = list(sys.argv[1:] if argv is None else argv)
            token = _DEBUG.set("--debug" in argv)
            argv = [a for a in argv if a != "--debug"]
            try:
                with sigterm_as_interrupt() as sigterm:
                    code = main(argv)
                    if code == EXIT_TERMINATED:     # the CLI stopped at the SIGTERM and said so itself
                        sigterm.handled()
                    return code
            except KeyboardInterrupt as exc:       # fail() prints the traceback under --debug
                what = "terminated (SIGTERM)" if by_sigterm(exc) else "interrupted"
                return fail(prog, f"{what}; nothing more was done", interrupted_code(exc))
            except BrokenPipeError:   # `cmunext-info --json | head`: the reader left early; say nothing,
                try:                  # and keep Python's exit-time flush from saying it either
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                except (OSError, ValueError):
                    pass
                return EXIT_BROKEN_PIPE
            except Exception as exc:  # the contract: one clear line, never a traceback (unless --debug)
                return fail(prog, error_message(exc))
            finally:
                _DEBUG.reset(token)
        return wrapper
    return decorate


def signature_note(info: dict) -> str:
    """The one line every CLI prints about the model's signature (describe()["signature"])."""
    sig = info.get("signature") or "unsigned"
    if sig.startswith("signed by trusted key"):
        return f"signature: {sig}"
    return f"note: signature: {sig} (no trust policy: set --trusted-key or $CMUNEXT_TRUSTED_KEYS to require one)"


def trust_preflight(weights, trusted_keys) -> tuple[str | None, str]:
    """The trust policy's verdict on `weights` before any worker starts -> (the refusal or None,
    the signature line to print)."""
    from cmunext_edge.artifacts.integrity import VerifyReport, check_trust
    from cmunext_edge.artifacts.signing import trust_policy
    from cmunext_edge.resources import resolve_weights
    path = resolve_weights(weights)
    report = check_trust(path, trust_policy(trusted_keys), VerifyReport(str(path)))
    return (f"cannot load model: {report.message()}" if report.problems else None,
            signature_note({"signature": report.signature}))


