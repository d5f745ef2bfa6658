"""The grading pipeline: discover -> execute -> check -> score -> store (export is
``grader.output``), one module per stage, and the drivers that run it.

- stages: ``discover``, ``execute``, ``checking`` (a homework's pytest checks), ``score``,
  ``store`` (the gradebook), ``written`` (its written answers and their marks);
- drivers: ``grading`` (one submission: execute, check, score into a row), ``pool`` (worker
  processes on every core), ``cluster`` (the same on Dask), ``run`` (``grade_all``: a folder of
  submissions into the gradebook).
"""
