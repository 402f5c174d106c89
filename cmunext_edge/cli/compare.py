"""cmunext-compare: one table across devices from cmunext-check reports (device_report.json).

Markdown on stdout; with --out PREFIX also PREFIX.md, PREFIX.json and PREFIX.png (latency vs Dice,
emulated runs hollow: their times are not speeds)."""
from __future__ import annotations

import sys

from cmunext_edge.cli.common import cli_main, make_parser, output_path

EXAMPLE = """examples:
  cmunext-compare host/device_report.json pi4/device_report.json orin/device_report.json
  cmunext-compare reports/*.json --out benchmarks/results/devices_arm --title "ARM CPUs (emulated)"

exit codes: 0 table written; 2 nothing written (a report missing, not JSON or not a cmunext-check
report; an output that cannot be written)."""


@cli_main("cmunext-compare")
def main(argv=None) -> int:
    p = make_parser("cmunext-compare", __doc__, EXAMPLE)
    p.add_argument("reports", nargs="+", help="device_report.json files written by cmunext-check")
    p.add_argument("--out", type=output_path, help="prefix for .md/.json/.png files")
    p.add_argument("--title", help="table heading")
    args = p.parse_args(argv)
    from cmunext_edge.device.compare import compare
    res = compare(args.reports, args.out, args.title)
    print(res["markdown"])
    if res["files"]:
        print("written: " + ", ".join(res["files"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
