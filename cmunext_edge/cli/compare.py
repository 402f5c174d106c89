"""cmunext-compare: one table across devices from cmunext-check reports (device_report.json).

Markdown on stdout; with --out PREFIX also PREFIX.md, PREFIX.json and PREFIX.png (latency vs Dice,
emulated runs hollow: their times are not speeds)."""
from __future__ import annotations

import sys

from cmunext_edge.cli.common import cli_main, fail, input_path, make_parser, output_path
from cmunext_edge.fileio import printable

EXAMPLE = """examples:
  cmunext-compare host/device_report.json pi4/device_report.json orin/device_report.json
  cmunext-compare reports/*.json --out benchmarks/results/devices_arm --title "ARM CPUs (emulated)"

A report given twice (the same file, or a copy) is shown once, with a note; a figure that is not
a number (NaN) is shown as '-' (null in PREFIX.json) and the row is not a pass.

A report that is missing, not JSON, not a cmunext-check report or edited is left out of the table
and named on stderr ("skipped PATH: why"); the others are compared.

exit codes: 0 table written from every report; 1 table written, some report(s) skipped; 2 nothing
written (no report usable; an output that cannot be written, or one that would replace a report it
reads: checked before anything is read)."""


@cli_main("cmunext-compare")
def main(argv=None) -> int:
    p = make_parser("cmunext-compare", __doc__, EXAMPLE)
    p.add_argument("reports", nargs="+", type=input_path, help="device_report.json files written by cmunext-check")
    p.add_argument("--out", type=output_path, help="prefix for .md/.json/.png files")
    p.add_argument("--title", help="table heading")
    args = p.parse_args(argv)
    from cmunext_edge.cli.preflight import check_distinct_outputs, check_output_file
    from cmunext_edge.device.compare import compare, output_files
    if args.out:
        outputs = [("--out", f) for f in output_files(args.out)]
        problem = next((why for option, f in outputs if (why := check_output_file(f, option))), None) \
            or check_distinct_outputs(outputs, args.reports)
        if problem:
            return fail("cmunext-compare", problem)
    res = compare(args.reports, args.out, args.title)
    for note in res["notes"]:
        print(f"cmunext-compare: note: {note}", file=sys.stderr)
    for why in res["skipped"]:
        print(f"cmunext-compare: skipped {printable(why)}", file=sys.stderr)
    print(res["markdown"])
    if res["files"]:
        print("written: " + ", ".join(res["files"]))
    return 1 if res["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
