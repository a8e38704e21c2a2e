"""Convert a published AVS checkpoint into this project's checkpoint format.

    python workflow_scripts/import_checkpoint.py --format avsbench-tpavi-pvt2 \
        --checkpoint S4_pvt_best.pth --vggish vggish-10086976.pth --out tpavi_pvt_s4.pt
    python workflow_scripts/import_checkpoint.py --format avsegformer-pvt2 \
        --checkpoint AVSegFormer_pvt2_s4.pth --out avsegformer_pvt_s4.pt

Also the script of the workflow's ``import_checkpoint`` rule (config ``external_checkpoints``).
Formats, dropped keys and the stored config: avsrobust/models/published.py.
"""

import sys
from pathlib import Path

snakemake = globals().get("snakemake")  # set when Snakemake runs this as a rule's script


def workflow_job(logger) -> None:
    """The rule's job: the same conversion, paths from ``snakemake.input``/``output``."""
    from avsrobust.models.published import import_checkpoint

    inp, out, p = snakemake.input, snakemake.output[0], snakemake.params.cfg
    vggish = inp.vggish if hasattr(inp, "vggish") else None
    cfg = import_checkpoint(p["format"], inp.checkpoint, out, vggish, p["image_size"])
    logger.info(
        "%s: %s %s at %d px from %s %s (vggish %s); dropped %s",
        out,
        cfg["model"]["name"],
        cfg["model"]["backbone"],
        cfg["image_size"],
        p["format"],
        inp.checkpoint,
        vggish,
        cfg["imported"]["dropped"],
    )


if snakemake is not None:
    from avsrobust.joblog import run_script

    run_script(workflow_job, snakemake.log[0])
elif __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    from avsrobust.models.published import main

    sys.exit(main())
