"""Signatures and the trust policy: the device runs only files that a trusted key signed.

Format: OpenSSF model signing (`model-signing`, the `sign` extra) with a local elliptic-curve key
pair (NIST P-256), offline: no certificate, no transparency log. A signature is a Sigstore bundle
(DSSE envelope over an in-toto statement) that lists the sha256 of each signed file by name; it
lies beside the files as `<entry file>.sig` (`bundle.sig` for a device bundle).

What is signed is exactly what the runtime reads: the artifact's files (kinds.artifact_files:
.onnx; .xml + .bin; .engine + .engine.json), which carry the embedded preprocessing contract,
threshold and self-test. Verification (`check_signature`) runs before any runtime parses a file:
the signature must verify with one of the trusted public keys, it must cover every required file,
and every covered file must hash as signed. Anything else raises SignatureError naming what failed.

The trust policy is `trusted_keys=[...]` (EdgeSegmenter, open_backend), `--trusted-key PUB.pem`
on the CLIs, or CMUNEXT_TRUSTED_KEYS (public-key paths separated by os.pathsep) for firmware apps
that cannot pass arguments. Without one, nothing is checked and the load reports "unsigned" or
"signed, not checked".
"""
from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cmunext_edge.artifacts.errors import SignatureError
from cmunext_edge.artifacts.kinds import artifact_files
from cmunext_edge.fileio import sha256_file, loads_json

ENV_VAR = "CMUNEXT_TRUSTED_KEYS"
SIG_SUFFIX = ".sig"


class TrustPolicyError(ValueError):
    """A trust policy that cannot be used (a key file missing or not a public key)."""


class SigningKeyError(ValueError):
    """A signing key that is missing or cannot sign."""


def signature_path(entry: str | Path) -> Path:
    entry = Path(entry)
    return entry.with_name(entry.name + SIG_SUFFIX)


def _model_signing():
    from cmunext_edge._deps import require
    require("cryptography")
    return require("model_signing")


def key_fingerprint(public_pem: bytes) -> str:
    """sha256 of the public key's PEM (what a model-signing signature names as its key hint)."""
    return hashlib.sha256(public_pem).hexdigest()


def _public_pem(path: Path) -> bytes:
    _model_signing()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise TrustPolicyError(f"trusted key {path}: not a readable PEM public key ({exc})") from None
    curve = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else None
    if curve not in SIGNING_CURVES:      # a key that can verify no signature here is a broken policy
        what = f"an EC key on {curve}" if curve else f"a key of type {type(key).__name__.removeprefix('_')}"
        raise TrustPolicyError(f"trusted key {path}: {what}; signatures are verified with EC public keys on "
                               f"{', '.join(SIGNING_CURVES.values())} (as model-signing and the C/C++ library do)")
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def trust_policy(trusted_keys=None) -> list[Path] | None:
    """The trusted public keys: `trusted_keys` if given, else $CMUNEXT_TRUSTED_KEYS, else None
    (no policy). Every key must exist and be a PEM public key, and a list given must name at least
    one (TrustPolicyError otherwise)."""
    if isinstance(trusted_keys, (str, os.PathLike)):
        trusted_keys = [trusted_keys]
    if trusted_keys is not None and (isinstance(trusted_keys, (bytes, dict)) or not hasattr(trusted_keys, "__iter__")):
        raise TypeError(f"trusted_keys must be a public key file (.pub.pem) path or a list of them, "
                        f"got {type(trusted_keys).__name__}")
    if trusted_keys is not None:
        trusted_keys = list(trusted_keys)
        if not trusted_keys:          # e.g. an empty list read from a configuration file
            raise TrustPolicyError("trusted_keys is empty: give at least one public key file, or None for no "
                                   f"trust policy (then ${ENV_VAR} applies); an empty list is never taken as no policy")
    trusted_keys = trusted_keys or []
    bad = [k for k in trusted_keys if not isinstance(k, (str, os.PathLike))]
    if bad:
        raise TypeError(f"trusted_keys: each key must be a path to a .pub.pem file, got {type(bad[0]).__name__}")
    if any(not str(k).strip() for k in trusted_keys):     # Path("") would be the current folder
        raise TrustPolicyError("trusted key '': an empty path names no public key file")
    keys = [Path(k) for k in trusted_keys]
    if not keys and os.environ.get(ENV_VAR, "").strip():
        keys = [Path(k.strip()) for k in os.environ[ENV_VAR].split(os.pathsep) if k.strip()]
        if not keys:                     # set but naming no key: a broken policy, never no policy
            raise TrustPolicyError(f"{ENV_VAR}={os.environ[ENV_VAR]!r} names no public key file")
    if not keys:
        return None
    for k in keys:
        if k.is_dir():
            raise TrustPolicyError(f"trusted key {k}: a folder, not a public key file (give the .pub.pem file)")
        if not k.is_file():
            raise TrustPolicyError(f"trusted key {k}: no such file")
        _public_pem(k)
    return keys


# the elliptic curves a signature may use (cryptography's names -> NIST names): what model-signing's
# elliptic-key signer and verifier and embed/src/signature.cpp accept
SIGNING_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def check_signing_key(key, option: str = "--sign-key") -> None:
    """A private key that cannot sign raises SigningKeyError before any work is done."""
    if key is None:
        return
    if Path(key).is_dir():
        raise SigningKeyError(f"{option} {key}: a folder, not a private key file (give the .pem file)")
    if not Path(key).is_file():
        raise SigningKeyError(f"{option} {key}: no such file")
    _model_signing()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    try:
        private = serialization.load_pem_private_key(Path(key).read_bytes(), None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{option} {key}: not an unencrypted PEM private key ({exc}); make one "
                              f"with: cmunext-keys new --out KEYNAME") from None
    curve = getattr(private, "curve", None) if isinstance(private, ec.EllipticCurvePrivateKey) else None
    if curve is None or curve.name not in SIGNING_CURVES:
        kind = type(private).__name__.removeprefix("_").removesuffix("PrivateKey")
        what = f"an EC key on {curve.name}" if curve is not None else f"a key of type {kind}"
        raise SigningKeyError(f"{option} {key}: {what}; signatures need an EC private key on "
                              f"{', '.join(SIGNING_CURVES.values())} (what model-signing and the C/C++ library "
                              f"verify); make one with: cmunext-keys new --out KEYNAME")


class KeyWriteError(OSError):
    """A key file that cannot be written; nothing of the pair is left behind."""


class KeyExistsError(KeyWriteError, FileExistsError):
    """A key file (or a link) is already where a new key would go: never overwritten."""


def _write_new(path: Path, data: bytes, mode: int, what: str) -> None:
    """Write `data` to a file that does not exist yet (O_EXCL: never over a file; O_NOFOLLOW: never
    through a symbolic link, dangling or not); KeyWriteError names the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyWriteError(f"{path}: cannot write the {what}: its folder cannot be made "
                            f"({exc.strerror or exc})") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError:
        raise KeyExistsError(f"{path} exists{' (a symbolic link)' if path.is_symlink() else ''}; not "
                            f"overwritten (a lost private key cannot be recovered)") from None
    except OSError as exc:
        raise KeyWriteError(f"{path}: cannot write the {what} ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise KeyWriteError(f"{path}: cannot write the {what} ({exc.strerror or exc})") from None


def new_key_pair(private_out: str | Path, public_out: str | Path) -> tuple[Path, Path]:
    """Write a new P-256 private key (PEM, mode 0600) and its public key, both or neither: each is
    created exclusively (never over a file, never through a symbolic link), and the private key is
    removed again when the public key cannot be written. KeyWriteError (an OSError) names the path."""
    _model_signing()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    private_out, public_out = Path(private_out), Path(public_out)
    for p in (private_out, public_out):
        if os.path.lexists(p):
            raise KeyExistsError(f"{p} exists{' (a symbolic link)' if p.is_symlink() else ''}; not "
                                f"overwritten (a lost private key cannot be recovered)")
    key = ec.generate_private_key(ec.SECP256R1())
    _write_new(private_out, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()), 0o600, "private key")
    try:
        _write_new(public_out, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo),
                   0o644, "public key")
    except BaseException as exc:
        private_out.unlink(missing_ok=True)
        if isinstance(exc, KeyWriteError):
            raise type(exc)(f"{exc}; the private key {private_out} was removed again: nothing written") from None
        raise
    return private_out, public_out


def sign_files(folder: str | Path, files, key: str | Path, sig: str | Path) -> Path:
    """Sign exactly `files` (inside `folder`) with the private key at `key`; write the signature to
    `sig` (atomically). Every other file of the folder is left out of the signature."""
    ms = _model_signing()
    folder, sig = Path(folder), Path(sig)
    names = {Path(f).resolve().relative_to(folder.resolve()).as_posix() for f in files}
    others = [p.relative_to(folder).as_posix() for p in folder.rglob("*")
              if p.is_file() and p.relative_to(folder).as_posix() not in names]
    hashing = ms.hashing.Config().set_ignored_paths(paths=others, ignore_git_paths=False)
    tmp = sig.with_name(f".{sig.name}.tmp")
    try:
        config = ms.signing.Config().use_elliptic_key_signer(private_key=Path(key))
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        raise SigningKeyError(f"signing key {key}: not a usable EC private key ({exc})") from None
    config.set_hashing_config(hashing).sign(folder, tmp)
    os.replace(tmp, sig)
    return sig


def sign_artifact(entry: str | Path, key: str | Path) -> Path:
    """Sign the files the runtime reads for the artifact (or checkpoint) at `entry` -> `<entry>.sig`."""
    entry = Path(entry)
    files = artifact_files(entry)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise SignatureError(f"{entry}: cannot sign, missing file(s): {', '.join(missing)}")
    return sign_files(entry.parent, files, key, signature_path(entry))


def signed_resources(sig: Path) -> tuple[dict[str, str], int]:
    """(name -> sha256 as listed in the signature, how many signatures the envelope holds); unverified:
    for naming what differs, and refusing an envelope of several signatures."""
    try:
        envelope = loads_json(Path(sig).read_text())["dsseEnvelope"]
        statement = loads_json(base64.b64decode(envelope["payload"]))
        signatures = envelope.get("signatures")
        return ({r["name"]: r["digest"] for r in statement["predicate"]["resources"]},
                len(signatures) if isinstance(signatures, list) else 0)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"{Path(sig).name}: not a readable signature ({type(exc).__name__})") from None


def check_signature(folder: str | Path, required, sig: str | Path, trusted_keys) -> str:
    """Verify `sig` over `folder` with one of `trusted_keys`, covering every name in `required`;
    -> the fingerprint of the key that verified. SignatureError names what failed."""
    folder, sig = Path(folder), Path(sig)
    missing = [n for n in required if not (folder / n).is_file() and not (folder / n).is_symlink()]
    if missing:
        raise SignatureError(f"{', '.join(missing)}: no such file in {folder}")
    if not sig.is_file():
        raise SignatureError(f"unsigned: no signature {sig.name} beside it, and a trust policy is set")
    links = sorted(n for n in {*required, sig.name} if (folder / n).is_symlink())
    if links:                            # model-signing refuses links: say so instead of "another key"
        raise SignatureError(f"{', '.join(links)} in {folder} is a symbolic link: a signature is checked "
                             f"over regular files only; point at the folder the files really lie in")
    listed, count = signed_resources(sig)
    if count != 1:                       # model-signing would read the first only: one, as the C/C++ library
        raise SignatureError(f"{sig.name}: expected one signature, found {count}")
    uncovered = sorted(set(required) - set(listed))
    if uncovered:
        raise SignatureError(f"{sig.name} does not cover {', '.join(uncovered)}")
    ms = _model_signing()
    mismatch = None
    for key in trusted_keys:
        try:
            ms.verifying.Config().use_elliptic_key_verifier(public_key=Path(key)) \
                .set_ignore_unsigned_files(True).verify(folder, sig)
            return key_fingerprint(_public_pem(key))
        except Exception as exc:       # model-signing raises ValueError / InvalidSignature / others
            if "Signature mismatch" in str(exc):
                mismatch = exc
    if mismatch is not None:
        changed = [n for n, d in listed.items() if not (folder / n).is_file() or sha256_file(folder / n) != d]
        what = ", ".join(changed) or "a signed file"
        raise SignatureError(f"{what} changed after signing (sha256 differs from {sig.name})")
    names = ", ".join(Path(k).name for k in trusted_keys)
    raise SignatureError(f"{sig.name} is not signed by a trusted key ({names}): signed by another key, "
                         f"or the signature was altered")


def signature_status(entry: str | Path) -> str:
    """Without a trust policy: "unsigned", or "signed, not checked (no trusted key)"."""
    return "signed, not checked (no trusted key)" if signature_path(entry).is_file() else "unsigned"
