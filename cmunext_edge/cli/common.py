"""Small pieces shared by the command-line tools, and the one exit-code contract.

Every CLI: 0 all done; 1 done, but some inputs failed (each reported); 2 nothing done (usage,
weights, artifact, environment, or an unexpected error); 130 interrupted (Ctrl-C / SIGTERM).
No traceback reaches the user: `--debug` (accepted by every CLI) prints it as well.
"""
from __future__ import annotations

import argparse
import functools
import sys
import traceback

EXIT_OK, EXIT_PARTIAL, EXIT_NOTHING, EXIT_INTERRUPTED = 0, 1, 2, 130
DEBUG_HELP = "on an error, also print the Python traceback"


def make_parser(prog: str, doc: str, example: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=doc, epilog=example,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug(p)
    return p


def add_debug(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Show --debug in the help (cli_main strips it before the parser sees it)."""
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


def fail(prog: str, message: str, code: int = EXIT_NOTHING) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def _expected() -> tuple[type, ...]:
    """Errors whose message is the whole story (no 'unexpected' label)."""
    from cmunext_edge._deps import MissingDependencyError
    from cmunext_edge.artifacts.integrity import IntegrityError
    from cmunext_edge.runtime.base import BackendError
    return (MissingDependencyError, IntegrityError, BackendError, ValueError, OSError, ImportError)


def error_message(exc: BaseException) -> str:
    if isinstance(exc, _expected()):
        return str(exc) or type(exc).__name__
    return (f"unexpected {type(exc).__name__}: {exc} (nothing was done; rerun with --debug for the "
            f"traceback and report it)")


def cli_main(prog: str):
    """Decorate a CLI `main(argv) -> int` with the exit-code contract and --debug."""
    def decorate(main):
        @functools.wraps(main)
        def wrapper(argv=None) -> int:
            argv = list(sys.argv[1:] if argv is None else argv)
            debug = "--debug" in argv
            argv = [a for a in argv if a != "--debug"]
            try:
                return main(argv)
            except KeyboardInterrupt:
                if debug:
                    traceback.print_exc()
                return fail(prog, "interrupted", EXIT_INTERRUPTED)
            except Exception as exc:  # the contract: one clear line, never a traceback
                if debug:
                    traceback.print_exc()
                return fail(prog, error_message(exc))
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


