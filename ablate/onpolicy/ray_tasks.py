"""An on-policy build's shards as Ray tasks (``ablate.onpolicy.build``, on a cluster: ``--address``): one task per
GPU (or per two CPUs without GPUs), each loading the start point and the judge once and streaming its
shards back as they are done; the driver writes them (no shared file system needed), so a build killed
or failed mid-way resumes at the first missing shard, as a local build does. One pass per sweep."""

from __future__ import annotations

from collections.abc import Iterator

from ablate.onpolicy.build import Job, Sampler, ShardMap


def _build_shards(job: Job, prompts: list, shards: list[int]) -> Iterator[tuple[int, bytes]]:
    sampler = Sampler(job)
    size = job.cfg.shard_size
    for s in shards:
        yield s, sampler.shard(prompts[s * size : (s + 1) * size], s)


def ray_shards(job: Job, prompts: list, pending: list[int]) -> Iterator[tuple[int, bytes]]:
    """``ablate.onpolicy.build.ShardMap`` on the connected Ray cluster; a failed task is retried by Ray."""
    import ray

    if not pending:
        return
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    tasks = max(1, min(len(pending), gpus or int(resources.get("CPU", 1)) // 2))
    remote = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1, num_returns="streaming", max_retries=2)(_build_shards)
    prompts_ref = ray.put(prompts)
    streams = [remote.remote(job, prompts_ref, pending[i::tasks]) for i in range(tasks)]
    while streams:
        ready, _ = ray.wait(streams, num_returns=1)  # a stream is ready when its next shard is (or it ended)
        for stream in ready:
            try:
                ref = next(stream)
            except StopIteration:
                streams.remove(stream)
                continue
            yield ray.get(ref)


def cluster_map(address: str | None) -> ShardMap | None:
    """On a cluster (``--address``) Ray tasks build the shards on its GPUs; else (None) the driver does."""
    return ray_shards if address else None
