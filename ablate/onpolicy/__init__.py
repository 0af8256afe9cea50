"""On-policy preference data, built once per sweep: the build (``build``), its shards as Ray tasks
(``ray_tasks``), from judged samples to pairs (``pick``) and whether it fits a GPU (``fit``)."""
