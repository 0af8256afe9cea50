"""Running a sweep, on the driver: the CLI (``cli``), its plan (``plan``, ``order``, ``memory_plan``),
Ray Tune's wiring (``tune``, ``raystart``), staged and adaptive-seeds sweeps (``staged``,
``selection``, ``adaptive``, ``sequential``), the sweep's folder and its lease (``sweepdir``,
``lease``) and re-judging a finished sweep (``rejudge``)."""
