"""Benchmarks of the grader (``make bench``; ``python -m bench --help``).

- ``homework``: a trivial torch homework (one notebook, 5 asserts, 2 hidden checks) written
  for this grader, for nbgrader and for otter-grader, and N generated submissions of it;
- ``measure``: a command's wall and CPU time, its descendants' CPU included;
- ``tools``: each grader's course layout in a temporary folder, and the command that grades
  the N submissions with it;
- ``overhead``: per homework, grading the reference notebook against executing it bare;
- ``__main__``: the command line, the table and the JSON.
"""
