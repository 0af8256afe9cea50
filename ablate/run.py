"""``python -m ablate.run SWEEP.yaml``: the sweep CLI (``ablate.sweep.cli``)."""

import sys

from ablate.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
