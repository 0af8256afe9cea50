"""Verdicts on claims about a sweep: two arms compared on a metric from seeds and held-out examples
(``compare``, ``examples``), the claims' tests corrected together (``claim_tests``), the SimPO paper's
findings (``paper_claims``) and the sweep file's own ``claims:`` (``sweep_claims``) as tests, and the
adaptive-seeds loop's look at them (``decider``). The report (``analysis``) shows the same verdicts."""
