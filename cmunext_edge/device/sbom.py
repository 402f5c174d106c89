"""The CycloneDX SBOM of a device bundle: what the device installs, and which model it runs.

On the bundling host (`write_sbom`, needs the `sbom` extra): the bundle's runtime requirements are
pinned with their whole dependency closure as installed here (`pinned_closure`, from the packages'
own metadata), written to requirements.txt, turned into components by the CycloneDX tool
(`cyclonedx-py requirements`), then the CycloneDX library adds this toolkit's wheel (sha256) and
the model (a machine-learning-model component: artifact sha256, each file's sha256, the source
checkpoint's sha256), validates the document against the CycloneDX 1.6 schema and writes
`sbom.cdx.json`.

On the device (`check_installed`, plain JSON and importlib.metadata: no extra needed): every
package the SBOM lists must be installed at its version; installed packages it does not list are
reported.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from cmunext_edge.fileio import loads_json

SBOM = "sbom.cdx.json"
INSTALLER_DISTS = {"pip", "setuptools", "wheel"}     # the venv's own tools, not what the bundle installs


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_closure(roots) -> list[tuple[str, str]]:
    """(name, version) of `roots` and everything they require (markers evaluated for this host,
    requested extras followed, e.g. pydantic[email]), as installed here, in discovery order.
    ValueError names a requirement that is not installed here (it cannot be pinned)."""
    from packaging.requirements import Requirement
    seen: dict[str, tuple[str, str]] = {}
    done: set[tuple[str, str]] = set()
    queue = [(r, "", None) for r in roots]
    while queue:
        name, extra, parent = queue.pop(0)
        if (canonical(name), extra) in done:
            continue
        done.add((canonical(name), extra))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ValueError(f"{name}{f' (required by {parent})' if parent else ''} is not installed on this "
                             f"host, so the bundle cannot pin it; install it here first") from None
        seen.setdefault(canonical(name), (dist.metadata["Name"], dist.version))
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                queue += [(req.name, e, dist.metadata["Name"]) for e in ("", *sorted(req.extras))]
    return list(seen.values())


def write_requirements(folder: Path, top: list[str]) -> Path:
    """requirements.txt: the top-level pins, then their whole dependency closure pinned as installed
    here, so that the device installs exactly what the SBOM lists."""
    names = {canonical(r.split("==")[0]) for r in top}
    rest = [f"{n}=={v}" for n, v in pinned_closure([r.split("==")[0] for r in top]) if canonical(n) not in names]
    path = folder / "requirements.txt"
    path.write_text("\n".join(top + ["# their dependencies, pinned as on the export host (sbom.cdx.json "
                                     "lists the same)"] + rest) + "\n")
    return path


def _requirement_components(requirements: Path) -> dict:
    """The CycloneDX tool's SBOM of a requirements file, as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "req.cdx.json"
        done = subprocess.run([sys.executable, "-m", "cyclonedx_py", "requirements", str(requirements),
                               "--of", "JSON", "--sv", "1.6", "--output-reproducible", "-o", str(out)],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"cyclonedx-py requirements failed: {done.stderr.strip()[-500:]}")
        return loads_json(out.read_text())


def write_sbom(folder: Path, requirements: Path, wheel: Path, model: dict) -> Path:
    """Write folder/sbom.cdx.json for the bundle (see the module docstring). `model`: name,
    backend, precision, sha256 (entry file), files {name: sha256}, source_sha256."""
    from cmunext_edge._deps import require
    require("cyclonedx_py")
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from packageurl import PackageURL

    from cmunext_edge._version import __version__
    from cmunext_edge.fileio import sha256_file
    bom = Bom.from_json(_requirement_components(requirements))
    bom.metadata.component = Component(name=f"{model['name']} device bundle", version=__version__,
                                       type=ComponentType.APPLICATION)
    bom.components.add(Component(
        name="cmunext-edge", version=__version__, type=ComponentType.LIBRARY,
        purl=PackageURL("pypi", name="cmunext-edge", version=__version__),
        description=f"this toolkit's wheel, installed from the bundle: {wheel.name}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=sha256_file(wheel))]))
    props = [Property(name=f"cmunext:file:{n}:sha256", value=d) for n, d in sorted(model["files"].items())]
    props += [Property(name="cmunext:source_checkpoint_sha256", value=str(model.get("source_sha256"))),
              Property(name="cmunext:backend", value=model["backend"]),
              Property(name="cmunext:precision", value=model["precision"])]
    bom.components.add(Component(
        name=model["name"], version=model["sha256"][:16], type=ComponentType.MACHINE_LEARNING_MODEL,
        description=f"CMUNeXt {model['backend']} {model['precision']} artifact",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=model["sha256"])], properties=props))
    bom.register_dependency(bom.metadata.component, list(bom.components))
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise RuntimeError(f"the SBOM does not validate against CycloneDX 1.6: {error}")
    path = folder / SBOM
    path.write_text(text + "\n")
    return path


def read_sbom(folder: Path) -> dict:
    """The SBOM's packages {canonical name: (name, version)} and its model component."""
    data = loads_json((Path(folder) / SBOM).read_text())
    packages, model = {}, None
    for c in data.get("components", []):
        if c.get("type") == "machine-learning-model":
            props = {p["name"]: p["value"] for p in c.get("properties", [])}
            model = {"name": c["name"], "sha256": c["hashes"][0]["content"],
                     "source_checkpoint_sha256": props.get("cmunext:source_checkpoint_sha256")}
        elif str(c.get("purl", "")).startswith("pkg:pypi/"):
            packages[canonical(c["name"])] = (c["name"], c.get("version"))
    return {"packages": packages, "model": model, "spec_version": data.get("specVersion")}


def check_installed(folder: Path) -> dict:
    """Compare the SBOM with what is installed here -> {components, model, missing, different, extra}."""
    sbom = read_sbom(folder)
    installed = {}
    for dist in metadata.distributions():      # the first on sys.path wins, as for an import: a copy
        installed.setdefault(canonical(dist.metadata["Name"]), dist.version)   # vendored later (setuptools/_vendor) does not count
    missing = sorted(n for k, (n, _) in sbom["packages"].items() if k not in installed)
    different = sorted(f"{n} {installed[k]} (SBOM {v})" for k, (n, v) in sbom["packages"].items()
                       if k in installed and installed[k] != v)
    extra = sorted(k for k in installed if k not in sbom["packages"] and k not in INSTALLER_DISTS)
    return {"spec_version": sbom["spec_version"], "packages": len(sbom["packages"]), "model": sbom["model"],
            "missing": missing, "different": different, "extra": extra}
