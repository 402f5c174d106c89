"""cmunext-bundle: pack an exported artifact into a device bundle (a folder and a .tar.gz).

The bundle holds the artifact, its preprocessing contract and self-test, verification images
with the host's reference outputs, pinned requirements for its runtime only (no torch), a wheel
of the toolkit's core, a CycloneDX SBOM (sbom.cdx.json) of what the device installs and of the model,
and a README; every file's sha256 is listed in bundle.json. With --sign-key the artifact and the
whole bundle are signed (bundle.sig). Copy it to the device and run `cmunext-check` there."""
from __future__ import annotations

import sys

from cmunext_edge.cli.common import cli_main, device_name, input_path, make_parser, output_path, positive_int

EXAMPLE = """examples:
  cmunext-bundle exports/cmunext-s-busi_fp32.onnx
  cmunext-bundle exports/cmunext-s-busi_int8.xml --images your_dataset/ --n-images 8 --out bundles
  cmunext-bundle exports/cmunext-s-busi_fp32.onnx --sign-key keys/release.pem
      (on the device: cmunext-check BUNDLE --trusted-key release.pub.pem)
  cmunext-export --weights models/cmunext-s-busi.safetensors --target onnx --bundle   (export, then bundle)

then, on the device: tar xzf NAME.bundle.tar.gz && cd NAME.bundle && (see its README.md)

exit codes: 0 bundle written; 2 nothing written (usage error, missing or refused artifact,
unusable verification images); 130/143 interrupted (nothing is left behind)."""


def build_parser():
    p = make_parser("cmunext-bundle", __doc__, EXAMPLE)
    p.add_argument("artifact", type=input_path, help="exported artifact (.onnx, .xml, .engine)")
    p.add_argument("--out", type=output_path, help="folder for the bundle (default: beside the artifact)")
    p.add_argument("--images", help="held-out verification images with masks (official layout); default: "
                                    "a shipped model's held-out images; required for any other model")
    p.add_argument("--n-images", type=positive_int, help="verification images taken (default: as many as the "
                                                         "precision's tail claim needs, 49; fewer: cmunext-check "
                                                         "reports the weaker claim)")
    p.add_argument("--device", type=device_name, default="cpu", help="device that makes the host reference outputs (default cpu)")
    p.add_argument("--no-archive", dest="archive", action="store_false", help="write the folder only")
    p.add_argument("--sign-key", metavar="KEY.pem", help="sign the artifact and the bundle with this private "
                   "key (cmunext-keys new makes one; docs/signing.md)")
    return p


@cli_main("cmunext-bundle")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.artifact, out=args.out, images=args.images, n_images=args.n_images,
               device=args.device, archive=args.archive, sign_key=args.sign_key)


def images_line(used: dict) -> str:
    """What the bundle verifies on, what it left out and why, and a warning when its images are not
    (known to be) held out: cmunext-check then does not call the artifact verified."""
    from cmunext_edge.device.bundle import held_out_of
    left = [f"{used[key]} {why} not used" for key, why in (
        ("without_mask_not_used", "without a mask"),
        ("training_not_used", f"training image(s) of the model ({used.get('training_list')})"),
        ("calibration_not_used", "calibration image(s) of the artifact")) if used.get(key)]
    finding = held_out_of(used)        # no other images were there, or the model's training images are unknown
    return (f"verification images: {used['n']} of {used['source']}" + "".join(f"; {x}" for x in left)
            + (f"; warning: {finding[0]}: {finding[1]}: cmunext-check will not call it verified (give --images "
               f"with held-out images of the model)" if finding else "")
            + (f"; note: {used['classes_note']}" if used.get("classes_note") else "")
            + "".join(f"\nskipped (another image took its place): {x['reason']}" for x in used.get("unusable_skipped") or []))


def run(artifact, **options) -> int:
    """Make the bundle and print where it is and what to run next (shared with cmunext-export --bundle).

    Errors propagate: the caller's cli_main turns them into one line and exit 2 (nothing written)."""
    from cmunext_edge.artifacts.manifest import manifest_lookup
    from cmunext_edge.device.bundle import make_bundle
    res = make_bundle(artifact, **options)
    damaged = manifest_lookup(artifact)[1]
    if damaged:
        print(f"note: {damaged}; the artifact's files were checked against the content hash embedded at export "
              f"instead, and the images that calibrated it are not known (a verification image may be one)")
    print(images_line(res.manifest["images"]))
    print(f"bundle: {res.folder}" + (f"\narchive: {res.archive}" if res.archive else "")
          + f"\nruntime requirements: {', '.join(res.manifest['requirements'])}"
          + f"\nSBOM: {res.folder / res.manifest['sbom']}"
          + (f"\nsigned: {res.folder / 'bundle.sig'}" if res.manifest.get("signed") else "")
          + f"\nnext, on the device:  cmunext-check {res.folder.name}"
          + (" --trusted-key PUB.pem" if res.manifest.get("signed") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
