"""One trial, in a Ray worker: its config (``config``), the run (``runner``: load, reference, train,
evaluate, final record), the step loop (``train``), the objective's batches (``preference``,
``reference``), held-out metrics (``evaluate``), checkpoints, the start point, worker caches, memory,
LoRA, DeepSpeed (``dsconfig``, ``backends``) and its files in storage (``record``)."""
