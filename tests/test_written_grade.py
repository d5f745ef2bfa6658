"""`grader grade` collects the written answers (tests/written_course.py's tiny homework, in
real kernels), `grader mark` prints its address and refuses what it must."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from written_course import GOOD, answered, class_submissions, write_course, write_submission

from grader.cli.main import main
from grader.pipeline import written
from grader.pipeline.store import open_gradebook
from grader.tools import mark_app


@pytest.mark.kernel
def test_grading_collects_the_answers_and_the_final_waits_for_the_marks(tmp_path: Path):
    course = write_course(tmp_path)
    subs = tmp_path / "subs"
    class_submissions(course, subs)
    book, csv_path = tmp_path / "gb.sqlite", tmp_path / "grades.csv"
    args = ["grade", str(subs), "--course", str(course.path), "--gradebook", str(book),
            "--csv", str(csv_path), "--feedback", str(tmp_path / "fb"), "--jobs", "1",
            "--seed", "7"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False).set_index("student")
    assert table.loc["alice", "hw1_status"] == "marking_pending"
    assert table.loc["alice", "hw1_final"] == ""
    assert table.loc["alice", "hw1_raw"] == "40.00"  # the checks' 2 of 5 points so far
    assert table.loc["carol", "hw1_final"] == "0.00"  # the template: no answer, no point
    # the summary printed at the end shows the rows as the CSV does
    line = next(x for x in result.output.splitlines() if "│ alice" in x)
    cells = [c.strip() for c in line.split("│")[1:-1]]
    assert (cells[2], cells[3], cells[5]) == ("marking_pending", "40.00", "-"), line
    with open_gradebook(book) as opened:
        answers = written.answers(opened, figures=True)
    alice = next(a for (s, _, _), a in answers.items() if s == "alice")
    assert alice["roofline"].text == GOOD["roofline"] and alice["roofline"].figure
    dave = next(a for (s, _, _), a in answers.items() if s == "dave")
    assert "2 cells carry this question" in dave["flops"].flag

    # a gradebook whose answers were never read (graded before the questions existed):
    # the next run reads them for the rows it keeps, and grades nothing again
    db = sqlite3.connect(book)
    with db:
        db.execute("DELETE FROM answers")
    db.close()
    write_submission(subs, "frank", answered(course, GOOD))
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.count("(kept)") == 5
    with open_gradebook(book) as opened:
        assert len(written.answers(opened)) == 6


class _Server:
    server_port = 4321

    def serve_forever(self) -> None:
        raise KeyboardInterrupt

    def server_close(self) -> None:
        pass


def test_mark_prints_its_address_and_warns_off_the_loopback(tmp_path: Path, monkeypatch):
    course = write_course(tmp_path)
    book = tmp_path / "gb.sqlite"
    common = ["--course", str(course.path), "--gradebook", str(book)]
    result = CliRunner().invoke(main, ["mark", *common])
    assert result.exit_code == 2 and "no gradebook yet" in result.output
    with open_gradebook(book):
        pass
    seen: list[tuple[str, int]] = []
    monkeypatch.setattr(mark_app, "serve",
                        lambda app, host, port: seen.append((host, port)) or _Server())
    result = CliRunner().invoke(main, ["mark", *common])
    assert result.exit_code == 0, result.output
    assert seen == [("127.0.0.1", 0)]
    assert "http://127.0.0.1:4321/?token=" in result.output
    assert "WARNING" not in result.output
    result = CliRunner().invoke(main, ["mark", *common, "--host", "0.0.0.0", "--port", "8080"])
    assert seen[-1] == ("0.0.0.0", 8080)
    assert "WARNING: serving on 0.0.0.0" in result.output
    assert "http://0.0.0.0:4321/?token=" in result.output


def test_mark_refuses_a_broken_rubric_before_serving(tmp_path: Path) -> None:
    course = write_course(tmp_path)
    rubric = tmp_path / "solutions" / "hw1" / "rubric.toml"
    rubric.write_text(rubric.read_text().replace("points = 2\n", "points = 4\n", 1))
    with open_gradebook(tmp_path / "gb.sqlite"):
        pass
    result = CliRunner().invoke(main, ["mark", "--course", str(course.path), "--gradebook",
                                       str(tmp_path / "gb.sqlite")])
    assert result.exit_code == 2
    assert "rubric.toml: question.roofline.points" in result.output


@pytest.mark.kernel
def test_check_says_which_written_questions_the_saved_file_answers(tmp_path: Path) -> None:
    course = write_course(tmp_path)
    notebook = write_submission(tmp_path / "mine", "me", answered(
        course, {"roofline": "Both layers: below the ridge point."}, figure=None))
    result = CliRunner().invoke(main, ["check", str(notebook), "--course", str(course.path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # as read, whatever the terminal's width
    assert "written questions (2), marked by people after the deadline" in text
    assert ("roofline (2 pt): answered (6 words); the figure's cell (roofline-figure) has no "
            "PNG output") in text
    assert "run that cell and save the notebook before you hand it in" in text
    assert "flops (1 pt): not answered yet; the answer cell was left as given" in text
