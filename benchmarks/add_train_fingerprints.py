"""Add the fingerprints of a shipped model's training images to its split.json ("train_fingerprints",
exact, and "train_lookalikes", near copies; data/fingerprint.py), so that an export recognises a renamed
or near copy of a training image given as --verify-data. cmunext-train records them itself; the shipped
models' splits predate that.

    .venv/bin/python benchmarks/add_train_fingerprints.py ../shared/data/busi-train \
        models/cmunext-s-busi.split.json models/cmunext-base-busi.split.json
"""
import json
import sys
from pathlib import Path

from cmunext_edge.data.discovery import discover
from cmunext_edge.data.fingerprint import FINGERPRINTS_KEY, LOOKALIKES_KEY, Seen, sample_fingerprints


def main(dataset: str, *splits: str) -> int:
    by_name = {s.name: s for s in discover(dataset)}
    for path in map(Path, splits):
        split = json.loads(path.read_text())
        missing = [n for n in split["train"] if n not in by_name]
        if missing:
            print(f"{path}: {len(missing)} training images are not in {dataset} (e.g. {missing[0]!r})")
            return 1
        prints = sample_fingerprints([by_name[n] for n in split["train"]])
        if len(prints) != len(split["train"]):
            print(f"{path}: {len(split['train']) - len(prints)} training images could not be read")
            return 1
        split[FINGERPRINTS_KEY], split[LOOKALIKES_KEY] = Seen.of(prints.values()).lists()
        path.write_text(json.dumps(split, indent=1) + "\n")
        print(f"{path}: {len(split[FINGERPRINTS_KEY])} fingerprints and {len(split[LOOKALIKES_KEY])} look-alike "
              f"hashes of {len(split['train'])} training images")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
