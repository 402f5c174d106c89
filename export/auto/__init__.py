"""`cmunext-export --target auto`: export every candidate for a device, measure it, keep the fastest
within a Dice budget, report every candidate. `candidates.py` is the table of candidates,
`run.py` exports, measures and selects, `report.py` writes auto_report.{json,md,png}."""
from cmunext_edge.export.auto.candidates import CANDIDATES, QUICK, Candidate, candidates_for  # noqa: F401
from cmunext_edge.export.auto.run import (  # noqa: F401
    AutoOptions, CandidateStatus, Measured, export_candidate, load_eval_set, run_auto, select, skip_reason)
