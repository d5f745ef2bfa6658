"""What is shipped: to students (``kit``, ``kit_text``: the kit that ``make check`` runs;
``student_notebooks``: the notebooks generated from the references) and to other platforms
(``gradescope``: the autograder bundle and its runner)."""
