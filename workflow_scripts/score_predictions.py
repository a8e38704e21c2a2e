"""Score your own AVS model's PNG masks on AVSBench-Robust (see avsrobust/byo.py).

    python workflow_scripts/score_predictions.py --avsbench-root /data/AVSBench \
        --dataset s4 --split test --predictions my_model/s4 --out my_model_s4.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from avsrobust.byo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
