"""A sweep's records read back (Ray-free, no torch): its trials as one table (``loader``), a local copy
of results behind a URI (``fetch``), seed summaries of each setting (``summary``), each trial's judged
preferences (``judgments``) and whether costs drift with the start order (``drift``). The staged sweep's
selection, the adaptive-seeds verdicts and the report (``analysis``) all read a sweep through these."""
