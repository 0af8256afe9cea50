"""``python -m ablate.judge RESULTS_DIR --judge SPEC``: re-judging a finished sweep (``ablate.sweep.rejudge``)."""

import sys

from ablate.sweep.rejudge import main

if __name__ == "__main__":
    sys.exit(main())
