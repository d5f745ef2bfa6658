"""The instructor's tools beside grading: ``audit`` (the checks' strength and flakiness, with
``mutate`` and ``harness``), ``report`` and ``report_page`` (the class report), ``similarity``
(pairs of similar submissions) and ``leaks`` (secrets in a kit)."""
