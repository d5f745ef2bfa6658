"""Homework 3 under its hidden checks: the tests of tests/homework_suite.py."""

from __future__ import annotations

from homework_suite import homework

HOMEWORK = homework("hw3", min_points=40, cell_timeout_s=60, notebook_timeout_s=180,
                    call_timeout_s=30)
globals().update(HOMEWORK.tests())
