"""Bodies of the in-process (``run:``) jobs, kept out of the Snakefile: plain, importable
code (tests/test_negatives.py runs them) that costs milliseconds per clip.

The per-clip negative-audio job runs inside Snakemake's process thousands of
times, so it must cost milliseconds: no logging framework, no plan re-parsing
(the parsed plan is cached per file version).
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

from . import layout
from .errors import InputError
from .negatives import NegativeSettings, generate_negative
from .offscreen_plan import read_plan

_HOST = socket.gethostname()


@functools.lru_cache(maxsize=8)
def _plan(path: str, mtime_ns: int, size: int) -> dict[tuple[str, str], tuple[str, str]]:
    return read_plan(path)


def donor_of(plan_path: str | Path, split: str, video: str) -> tuple[str, str]:
    """(donor video, donor category) of one clip from the plan TSV (cached parse)."""
    st = os.stat(plan_path)
    plan = _plan(str(plan_path), st.st_mtime_ns, st.st_size)
    try:
        return plan[(split, video)]
    except KeyError:
        raise InputError(plan_path, f"no off-screen donor planned for {split}/{video}") from None


def negative_job(
    settings: NegativeSettings,
    data_root: str | Path,
    wildcards,
    negtype: str,
    out: str | Path,
    log_path: str | Path,
    plan: str | Path | None = None,
    declared_donor: str | Path | None = None,
) -> None:
    """Write one ``negtype`` clip named by the rule's wildcards (data, split, item).

    ``plan``: the off-screen plan TSV, which an ``offscreen`` or ``mixture`` clip takes its
    donor from (layout.DONOR_TYPES).
    ``declared_donor`` is the donor WAV the DAG declared as the job's input: it
    must be the plan's donor, or the job would read a file Snakemake does not
    watch.
    """
    dataset = layout.DATASET_OF_DATA_DIR[wildcards.data]
    split, item = wildcards.split, wildcards.item
    if (negtype in layout.DONOR_TYPES) != (plan is not None):
        raise ValueError(
            f"{negtype} clip {item}: {' and '.join(layout.DONOR_TYPES)} clips, and only they, "
            "need a plan"
        )
    category, _, video = item.rpartition("/")
    clip = layout.Clip(dataset, split, video, category, frozenset())
    positive = layout.positive_wav(data_root, clip)
    donor = None
    if plan is not None:
        donor_video, donor_category = donor_of(plan, split, video)
        donor = layout.positive_wav(
            data_root, layout.Clip(dataset, split, donor_video, donor_category, frozenset())
        )
        if declared_donor is not None and Path(declared_donor) != donor:
            raise InputError(
                plan,
                f"{split}/{video}: the plan's donor is {donor}, the workflow declared "
                f"{declared_donor}; the plan is stale (rerun offscreen_plan)",
            )
    try:
        generate_negative(settings, dataset, split, video, negtype, positive, out, donor)
    except Exception as exc:
        _write_log(log_path, f"FAILED {dataset}/{split}/{item} {negtype}: {exc}\n")
        raise
    # Where the job ran: the per-clip jobs are meant to run inside the main
    # Snakemake process (also on SLURM, where they are localrules).
    where = f"host={_HOST}\tpid={os.getpid()}\tslurm_job={os.environ.get('SLURM_JOB_ID', '')}"
    _write_log(
        log_path,
        f"{dataset}\t{split}\t{item}\t{negtype}\tpositive={positive}\t"
        f"donor={donor or ''}\t{where}\n",
    )


def _write_log(path: str | Path, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
