"""Submissions in from an LMS, grades and feedback back out (Moodle, Canvas).

In: ``moodle.read_download`` and ``canvas.read_download`` read the LMS's zip download as it comes
(``archive``: every member checked before one byte is used), map each file to a student of the
roster (``people``) and to a submission time (the Moodle worksheet; Canvas's REST API in
``canvas_api``, or a CSV), and return an ``Intake``; ``manifest.store`` writes its notebooks
and the grader's manifest CSV, which ``grader grade`` reads. Anything not understood stops the
import with every problem named (``grader.errors.LmsError``), before anything is written.

Out: ``export`` fills in Moodle's grading worksheet and writes its feedback-files zip, or writes
Canvas's gradebook import CSV; ``canvas_api.plan_push`` and ``canvas_api.push`` post grades and
a comment through Canvas's REST API. Every comment is the Markdown feedback of the row's one view
(``grader.output.feedback``).
"""
