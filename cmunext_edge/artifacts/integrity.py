"""Verified load: an exported artifact runs only after its bytes and its behaviour are checked.

Two checks, both on by default for every exported artifact (`open_backend`, `EdgeSegmenter`,
every CLI; opt out with `verify=False` / `--no-verify-load`):

1. **Files**: the sha256 of every file of the artifact is compared with the `manifest.json`
   beside it (written by cmunext-export), *before* the runtime parses anything. An entry must
   list every file of the artifact (an empty or partial `"files"` list is refused, never a pass). Without a
   manifest entry, the content hash embedded at export (`cmunext_edge.content_sha256`) is used:
   a sha256 over the artifact's files in which the hash itself is replaced by a fixed
   placeholder of the same length (so the hash can live inside the file it covers).
2. **Behaviour**: the embedded self-test (artifact_meta.check_selftest) runs once on the loaded
   backend; it covers the whole preprocessing contract, the threshold and the output.

0. **Signature** (only under a trust policy, see signing.py): the artifact's files must carry a
   valid signature by a trusted key; checked first, also with `verify=False`.

Any mismatch raises IntegrityError naming what differs. Plain checkpoints (.pth/.safetensors)
have no artifact hash or self-test; they are read by the safe loader and reported "checkpoint".
`runtime.registry.verify_artifact(path) -> VerifyReport` runs both checks and reports instead of
raising. Which files make up an artifact is artifacts/kinds.py's table.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from cmunext_edge.artifacts.errors import IntegrityError, SignatureError  # noqa: F401 (integrity.* for callers)
from cmunext_edge.artifacts.kinds import artifact_files, is_checkpoint
from cmunext_edge.artifacts.manifest import entry_hashes, manifest_lookup, no_entry_reason, unlisted_files
from cmunext_edge.artifacts.meta import PREFIX, check_selftest
from cmunext_edge.artifacts.signing import check_signature, signature_path, signature_status
from cmunext_edge.fileio import hash_mismatches

HASH_KEY = "content_sha256"
PLACEHOLDER = "0" * 64


REFUSED = "refused by the trust policy"


@dataclass
class VerifyReport:
    path: str
    kind: str = "artifact"                 # "artifact" or "checkpoint"
    hash_source: str | None = None         # "manifest", "embedded" or None
    hash_ok: bool | None = None
    selftest: dict | None = None           # SelfTestResult.as_dict()
    signature: str | None = None           # "signed by trusted key ...", "unsigned", "signed, not checked ..."
    manifest_problem: str | None = None    # why manifest.json beside it is damaged (then no entry is used)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def message(self) -> str:
        if self.problems:
            return f"{self.path}: refused: " + "; ".join(self.problems)
        signed = f"; {self.signature}" if self.signature else ""
        signed += f"; {self.manifest_problem}" if self.manifest_problem else ""
        if self.kind == "checkpoint":
            return f"{self.path}: checkpoint (no artifact hash or self-test to check{signed})"
        return f"{self.path}: verified (files by {self.hash_source} sha256, self-test passed{signed})"

    def as_dict(self) -> dict:
        return {"path": self.path, "kind": self.kind, "ok": self.ok, "hash_source": self.hash_source,
                "hash_ok": self.hash_ok, "selftest": self.selftest, "signature": self.signature,
                "manifest_problem": self.manifest_problem, "problems": list(self.problems)}


def content_digest(files, embedded: str) -> str:
    """sha256 over `files` in order, each with `embedded` (the stored hash) replaced by the placeholder."""
    digest = hashlib.sha256()
    for f in files:
        data = Path(f).read_bytes()
        digest.update(data.replace(embedded.encode(), PLACEHOLDER.encode()))
    return digest.hexdigest()


def seal(entry: str | Path) -> str:
    """Replace the placeholder hash embedded in the artifact at `entry` by its content hash."""
    files = artifact_files(entry)
    holders = [f for f in files if Path(f).read_bytes().count(PLACEHOLDER.encode()) == 1]
    total = sum(Path(f).read_bytes().count(PLACEHOLDER.encode()) for f in files)
    if total != 1 or len(holders) != 1:
        raise IntegrityError(f"{entry}: expected exactly one content-hash placeholder, found {total}")
    value = content_digest(files, PLACEHOLDER)
    holder = Path(holders[0])
    holder.write_bytes(holder.read_bytes().replace(PLACEHOLDER.encode(), value.encode()))
    return value


def check_manifest(path: str | Path, report: VerifyReport) -> bool:
    """Compare the files with the manifest beside them; True if a manifest entry was found."""
    path = Path(path)
    entry, report.manifest_problem = manifest_lookup(path)
    if entry is None:               # no entry (or a damaged manifest, named): the embedded hash still can vouch
        return False
    report.hash_source = "manifest"
    expected, problems = entry_hashes(entry)
    report.problems.extend(problems)
    unlisted = unlisted_files(entry, [f.name for f in artifact_files(path)])
    if unlisted:                   # an entry that leaves out a file of the artifact cannot vouch for it
        report.problems.append(f"manifest.json does not list {', '.join(unlisted)} (its entry lists "
                               f"{len(expected)} file(s)): the artifact's files cannot be checked")
    for name, actual, want in hash_mismatches(path.parent, expected):
        report.problems.append(f"{name} is listed in manifest.json but missing" if actual is None else
                               f"{name} sha256 {actual[:16]}... differs from manifest.json ({want[:16]}...): "
                               f"the file was modified or damaged")
    report.hash_ok = not report.problems
    return True


def check_embedded(path: str | Path, metadata: dict, report: VerifyReport) -> None:
    """Compare the files with the content hash embedded at export."""
    stored = metadata.get(HASH_KEY) or metadata.get(PREFIX + HASH_KEY)
    if not stored or len(str(stored)) != 64:
        report.problems.append(f"{no_entry_reason(report.manifest_problem)} and no embedded content hash: "
                               "its integrity cannot be checked (re-export it, or load with verify=False "
                               "/ --no-verify-load if you know why)")
        report.hash_ok = False
        return
    report.hash_source = "embedded"
    files = artifact_files(path)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        report.problems.append(f"missing file(s): {', '.join(missing)}")
        report.hash_ok = False
        return
    actual = content_digest(files, str(stored))
    report.hash_ok = actual == stored
    if not report.hash_ok:
        report.problems.append(f"content sha256 {actual[:16]}... differs from the hash embedded at "
                               f"export ({str(stored)[:16]}...): the file was modified or damaged")


def check_trust(path: str | Path, policy, report: VerifyReport) -> VerifyReport:
    """The signature check of the trust policy `policy` (trusted public keys; None: no policy, the
    report only says whether a signature is there). Reads files only, before any runtime does."""
    path = Path(path)
    if policy is None:
        report.signature = signature_status(path)
        return report
    try:
        fingerprint = check_signature(path.parent, [f.name for f in artifact_files(path)],
                                      signature_path(path), policy)
    except SignatureError as exc:
        report.signature = REFUSED
        report.problems.append(str(exc))
    else:
        report.signature = f"signed by trusted key {fingerprint[:16]}"
    return report


def precheck(path: str | Path, policy=None) -> VerifyReport:
    """File checks before the runtime parses anything: the trust policy's signature (if `policy`),
    then the manifest (the embedded hash needs the metadata and is checked by `verify_loaded`)."""
    report = check_trust(path, policy, VerifyReport(str(path), "checkpoint" if is_checkpoint(path) else "artifact"))
    if report.kind == "artifact" and not report.problems:
        check_manifest(path, report)
    return report


def verify_loaded(backend, report: VerifyReport | None = None) -> VerifyReport:
    """Finish the checks on a loaded backend: embedded hash (if no manifest) and the self-test."""
    report = report or precheck(backend.path)
    if report.kind == "checkpoint" or report.problems:
        return report
    if report.hash_source is None:
        check_embedded(backend.path, backend.metadata, report)
        if report.problems:
            return report
    result = check_selftest(backend.metadata.get("selftest"), backend.spec, backend.infer, backend.precision)
    result.device, result.precision = backend.device, backend.precision
    report.selftest = result.as_dict()
    if not result.passed:
        report.problems.append(result.message)
        return report
    # the self-test covers the contract (threshold included); the metadata's separate threshold key
    # must say the same, or the file was edited (the C++ library refuses it in the same order)
    recorded, spec = backend.metadata.get("threshold"), backend.metadata.get("spec")
    if recorded is not None and spec is not None and _number(recorded) != float(spec.threshold):
        report.problems.append(f"threshold {recorded} in the metadata differs from the contract's {spec.threshold}")
    return report


def _number(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def enforce(report: VerifyReport) -> VerifyReport:
    if not report.ok:
        raise (SignatureError if report.signature == REFUSED else IntegrityError)(report.message())
    return report
