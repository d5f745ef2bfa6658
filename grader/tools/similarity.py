"""Similarity flags: which submissions of one homework share much of the code their authors wrote.

The code a student wrote is the code cells of their notebook minus the template's own lines
(``assignments/<hw>/<notebook>``): the lines a diff against the template (``difflib``) marks as
added or changed. Each pair of students is compared with copydetect's fingerprints (k-grams of
the tokenized code with names and strings abstracted, the method of MOSS), and a pair is listed
when the code they share is at least ``threshold`` of either one's own code. These are flags for
a person to look at; nothing here reads or changes a grade.
"""

from __future__ import annotations

import difflib
import io
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
from copydetect import CodeFingerprint, compare_files

NOISE_CHARS = 25  # fingerprint length in characters of tokenized code (copydetect's default)
# Every k-gram is a fingerprint (winnowing window 1): a wider window picks fingerprints by
# Python's per-process string hash, so a pair's share would change from run to run.
WINDOW = 1


@dataclass(frozen=True)
class OwnCode:
    """The lines one student wrote for one homework, in notebook order, blank lines dropped."""

    student: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class SharedLine:
    """A line of a student's own code that the other student of a pair shares (1-based)."""

    number: int
    text: str


@dataclass(frozen=True)
class SimilarPair:
    """Two students whose own code overlaps. Shares are fractions (0..1) of each one's own
    code that the other one has too; ``shared_*`` are the lines involved, for a side-by-side
    reading."""

    first: str
    second: str
    first_share: float
    second_share: float
    shared_first: tuple[SharedLine, ...]
    shared_second: tuple[SharedLine, ...]

    @property
    def share(self) -> float:
        """The larger of the two shares: a copy that adds code of its own still shows."""
        return max(self.first_share, self.second_share)


@dataclass(frozen=True)
class HomeworkSimilarity:
    """The pairs of one homework at or above ``threshold``, highest share first, and the
    students left out with the reason (file gone, not a notebook, no code of their own)."""

    assignment: str
    threshold: float
    compared: tuple[str, ...]
    pairs: tuple[SimilarPair, ...]
    left_out: tuple[tuple[str, str], ...]
    template: str  # the template whose lines were removed, or a sentence saying there is none


def code_lines(notebook: Path) -> list[str]:
    """Every line of every code cell of ``notebook``; ValueError when it is not a notebook."""
    try:
        nb = nbformat.read(notebook, as_version=4)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read it: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds for a broken file
        raise ValueError(f"not a notebook: {type(exc).__name__}") from None
    return [line for cell in nb.cells if cell.get("cell_type") == "code"
            for line in str(cell.get("source", "")).splitlines()]


def own_code(student: str, lines: Sequence[str], template: Sequence[str]) -> OwnCode:
    """The lines of ``lines`` that a diff against ``template`` marks as the student's (added
    or changed), compared with surrounding white space ignored; blank lines dropped."""
    matcher = difflib.SequenceMatcher(None, [t.strip() for t in template],
                                      [s.strip() for s in lines], autojunk=False)
    from_template = {j for block in matcher.get_matching_blocks()
                     for j in range(block.b, block.b + block.size)}
    return OwnCode(student, tuple(line for j, line in enumerate(lines)
                                  if j not in from_template and line.strip()))


def _fingerprint(name: str, text: str) -> CodeFingerprint:
    # copydetect's own boilerplate filter is not used: with every k-gram kept it also drops
    # fragments that repeat within one student's code. The template is removed by own_code.
    return CodeFingerprint(name, NOISE_CHARS, WINDOW, language="python", fp=io.StringIO(text))


def _shared_lines(text: str, slices: np.ndarray) -> tuple[SharedLine, ...]:
    """The lines of ``text`` that the copied character ranges ``slices`` (2 x N) touch."""
    shared, start = [], 0
    for number, line in enumerate(text.split("\n"), start=1):
        end = start + len(line)
        if any(s < end and e > start for s, e in zip(slices[0], slices[1], strict=True)):
            shared.append(SharedLine(number, line))
        start = end + 1
    return tuple(shared)


def _may_reach(fp_a: CodeFingerprint, fp_b: CodeFingerprint, threshold: float) -> bool:
    """Whether the pair's share can reach ``threshold``: each fingerprint both have covers at
    most NOISE_CHARS characters wherever it occurs, which bounds the shared part from above.
    A cheap set intersection spares the full comparison for the many unrelated pairs."""
    common = fp_a.hashes & fp_b.hashes
    for fp in (fp_a, fp_b):
        covered = NOISE_CHARS * sum(len(fp.hash_idx[h]) for h in common)
        if covered >= threshold * fp.token_coverage:
            return True
    return False


def compare(codes: Iterable[OwnCode], threshold: float
            ) -> tuple[list[SimilarPair], list[str], list[str]]:
    """Compare every pair of ``codes``: (pairs at or above ``threshold``, highest share first;
    the students compared; those with too little code of their own to fingerprint)."""
    prints: dict[str, tuple[str, CodeFingerprint]] = {}
    too_short = []
    for code in sorted(codes, key=lambda c: c.student):
        text = "\n".join(code.lines)
        fp = _fingerprint(code.student, text)
        if fp.token_coverage == 0:
            too_short.append(code.student)
        else:
            prints[code.student] = (text, fp)
    pairs = []
    for (a, (text_a, fp_a)), (b, (text_b, fp_b)) in itertools.combinations(prints.items(), 2):
        if not _may_reach(fp_a, fp_b, threshold):
            continue
        overlap, (share_a, share_b), (slices_a, slices_b) = compare_files(fp_a, fp_b)
        if overlap and max(share_a, share_b) >= threshold:
            pairs.append(SimilarPair(a, b, float(share_a), float(share_b),
                                     _shared_lines(text_a, slices_a),
                                     _shared_lines(text_b, slices_b)))
    pairs.sort(key=lambda p: (-p.share, p.first, p.second))
    return pairs, list(prints), too_short


def homework_similarity(assignment: str, notebooks: Iterable[tuple[str, Path]],
                        template: Path | None, threshold: float) -> HomeworkSimilarity:
    """Flag pairs among one homework's submissions, ``notebooks`` being (student, path) with
    one notebook per student. A file that is gone or is no notebook is left out, with why."""
    left_out: list[tuple[str, str]] = []
    template_lines: list[str] = []
    note = "no template notebook: whole code cells were compared"
    if template is not None and template.is_file():
        try:
            template_lines = code_lines(template)
            note = str(template)
        except ValueError as exc:
            note = f"template {template} unusable ({exc}): whole code cells were compared"
    codes = []
    for student, path in notebooks:
        if not path.is_file():
            left_out.append((student, f"file gone: {path}"))
            continue
        try:
            codes.append(own_code(student, code_lines(path), template_lines))
        except ValueError as exc:
            left_out.append((student, f"{path}: {exc}"))
    pairs, compared, too_short = compare(codes, threshold)
    left_out += [(s, "too little code of their own to compare") for s in too_short]
    return HomeworkSimilarity(assignment, threshold, tuple(compared), tuple(pairs),
                              tuple(sorted(left_out)), note)
