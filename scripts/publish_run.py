"""Copy what documents a finished run into docs/results/ (no checkpoints, no TensorBoard events).

    python scripts/publish_run.py runs/pondernet-parity/<timestamp> docs/results/pondernet-parity/seed0

See ``engramlab.publish``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from engramlab.publish import publish_run

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(f"published {sys.argv[1]} -> {publish_run(Path(sys.argv[1]), Path(sys.argv[2]))}")
