"""cmunext-keys: make a signing key pair, sign an existing artifact, or check one against a key.

Signatures are OpenSSF model signing with a local P-256 key (offline; see docs/signing.md).
Keep the private key on the build machine; copy only the public key to devices."""
from __future__ import annotations

import sys
from pathlib import Path

from cmunext_edge.cli.common import cli_main, fail, make_parser, output_path

PROG = "cmunext-keys"
EXAMPLE = """examples:
  cmunext-keys new --out keys/release            (writes keys/release.pem and keys/release.pub.pem)
  cmunext-keys sign exports/cmunext-s-busi_fp32.xml --key keys/release.pem
  cmunext-keys verify exports/cmunext-s-busi_fp32.xml --trusted-key keys/release.pub.pem
  cmunext-export --weights cmunext-s-busi --target onnx --sign-key keys/release.pem  (sign at export)

`new` writes both key files or neither (never over a file or through a link). `sign` first checks
the artifact's files against its manifest.json (or the content hash embedded at export) and refuses
a modified or damaged artifact.

exit codes: 0 done / signature valid; 2 usage error, key problem, artifact modified (sign), or
signature refused."""


def build_parser():
    p = make_parser(PROG, __doc__, EXAMPLE)
    # not required=True: argparse would then answer "--frob" with "the following arguments are
    # required: command" instead of naming the unknown option; main() asks for the command
    sub = p.add_subparsers(dest="command", metavar="{new,sign,verify}")
    new = sub.add_parser("new", help="write a new P-256 key pair: OUT.pem (private, mode 0600) and OUT.pub.pem")
    new.add_argument("--out", required=True, type=output_path, help="path prefix of the key files")
    sign = sub.add_parser("sign", help="sign the files an artifact's runtime reads -> ARTIFACT.sig")
    sign.add_argument("artifact", help="exported artifact (.onnx, .xml, .engine) or checkpoint")
    sign.add_argument("--key", required=True, help="private key (PEM)")
    ver = sub.add_parser("verify", help="check an artifact's signature against trusted public keys")
    ver.add_argument("artifact", help="exported artifact or checkpoint")
    ver.add_argument("--trusted-key", action="append", required=True, metavar="PUB.pem",
                     help="trusted public key (repeat for several)")
    return p


@cli_main(PROG)
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("give a command: new, sign or verify")
    from cmunext_edge.artifacts import signing
    if args.command == "new":
        if Path(args.out).is_dir():
            return fail(PROG, f"--out {args.out} is a folder; --out is the key files' path prefix: --out "
                              f"{Path(args.out) / 'release'} writes {Path(args.out) / 'release.pem'} and "
                              f"{Path(args.out) / 'release.pub.pem'}")
        private, public = signing.new_key_pair(f"{args.out}.pem", f"{args.out}.pub.pem")
        print(f"private key: {private} (keep it on the build machine)\npublic key:  {public} "
              f"(fingerprint {signing.key_fingerprint(public.read_bytes())[:16]}; copy it to devices)")
        return 0
    artifact = Path(args.artifact)
    if artifact.is_dir():
        return fail(PROG, f"{artifact}: a folder; give the artifact's entry file (.onnx, .xml, .engine) or a checkpoint")
    if not artifact.is_file():
        return fail(PROG, f"{artifact}: no such file")
    if args.command == "sign":
        signing.check_signing_key(args.key, "--key")
        problem = _not_intact(artifact)
        if problem:
            return fail(PROG, problem)
        print(f"signed: {signing.sign_artifact(artifact, args.key)}")
        return 0
    from cmunext_edge.artifacts.integrity import VerifyReport, check_trust
    report = check_trust(artifact, signing.trust_policy(args.trusted_key), VerifyReport(str(artifact)))
    if report.problems:
        return fail(PROG, f"{artifact}: refused: {report.problems[0]}")
    print(f"{artifact}: {report.signature}")
    return 0


def _not_intact(artifact: Path) -> str | None:
    """Why an exported artifact must not be signed (its files no longer match its manifest.json
    entry, or without one the content hash embedded at export: a signature would vouch for a
    modified or damaged file), else None. A checkpoint carries no hash to check."""
    from cmunext_edge.artifacts.info import files_check, is_artifact
    if not is_artifact(artifact):
        return None
    check = files_check(artifact)
    if check["ok"]:
        return None
    return f"refused to sign: {check['message']}"


if __name__ == "__main__":
    sys.exit(main())
