"""Gradescope: ``bundle`` builds the autograder zip an instructor uploads; ``runner`` is what
runs inside Gradescope for each submission (``python -m grader.ship.gradescope ROOT``)."""
