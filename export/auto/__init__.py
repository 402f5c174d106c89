"""`cmunext-export --target auto`: export every candidate for a device, measure it, keep the fastest
within a Dice budget, report every candidate. `candidates.py` is the table of candidates,
`run.py` exports and measures, `select.py` keeps the fastest faithful one, `report.py` writes auto_report.{json,md,png}."""
from cmunext_edge.export.auto.candidates import CANDIDATES, QUICK, Candidate, candidates_for  # noqa: F401
from cmunext_edge.export.auto.run import AutoOptions, export_candidate, load_eval_set, run_auto, skip_reason  # noqa: F401
from cmunext_edge.export.auto.select import CandidateStatus, Measured, select, selection_note  # noqa: F401
