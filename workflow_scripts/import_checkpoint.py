"""Convert a published AVS checkpoint into this project's checkpoint format.

    python workflow_scripts/import_checkpoint.py --format avsbench-tpavi-pvt2 \
        --checkpoint S4_pvt_best.pth --vggish vggish-10086976.pth --out tpavi_pvt_s4.pt
    python workflow_scripts/import_checkpoint.py --format avsegformer-pvt2 \
        --checkpoint AVSegFormer_pvt2_s4.pth --out avsegformer_pvt_s4.pt

Formats, dropped keys and the stored config: avsrobust/models/published.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from avsrobust.models.published import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
