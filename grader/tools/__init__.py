"""The instructor's tools beside grading: ``audit`` (the checks' strength and flakiness, with
``mutate`` and ``harness``), ``report`` and ``report_page`` (the class report), ``similarity``
(pairs of similar submissions), ``leaks`` (secrets in a kit), and marking written answers:
``marking`` (the rows with their marks, the queue), ``mark_app`` (the page of ``grader mark``)
and ``marks_sheet`` (``grader marks export|import``)."""
