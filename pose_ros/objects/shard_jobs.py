"""Rendering jobs that each write one shard of training data, run on both cores with a progress bar.

Why one place: the first stage's scenes (``training_data.prerender``) and the crop bank
(``crop_bank.render_crop_bank``) are both written as independent, seeded shards; a job returns how
many samples it wrote. Forked workers inherit the loaded meshes instead of re-reading them; with one
worker or one job everything runs in this process (no pool start-up, plain tracebacks).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

__all__ = ["run_shard_jobs"]


def run_shard_jobs(job: Callable[[Any], int], args: Sequence[Any], total: int, already_done: int, workers: int,
                   progress: bool = True, **bar: Any) -> None:
    """``job(a)`` for every ``a`` in ``args`` (each returns the samples it wrote), a bar over ``total``
    samples starting at ``already_done``; ``bar`` passes on to tqdm (desc, unit, ...)."""
    from tqdm import tqdm

    pbar = tqdm(total=total, initial=already_done, disable=not progress, **bar)
    if workers <= 1 or len(args) <= 1:
        for a in args:
            pbar.update(job(a))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex:
            for n in ex.map(job, args):
                pbar.update(n)
    pbar.close()
