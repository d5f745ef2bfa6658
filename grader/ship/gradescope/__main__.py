"""``python -m grader.ship.gradescope [--check] ROOT``: what ``run_autograder`` and
``setup.sh`` run inside Gradescope."""

import sys

from grader.ship.gradescope.runner import main

sys.exit(main())
