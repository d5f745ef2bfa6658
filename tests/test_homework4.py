"""Homework 4 under its hidden checks: the reference earns everything on several draws, the
template nothing, and every realistic wrong version loses points, in the check meant to catch it.

The reference runs once; each wrong version then redefines its functions in that live kernel
by re-running the mutated cells, which is what the kernel of a notebook holding those cells
looks like when the checks call into it. Every hidden run retrains the 2-bit QAT model in the
kernel (a few seconds), which sets this file's pace.
"""

from __future__ import annotations

import pytest
from conftest import REPO, write_notebook
from hw4_mutants import CONSTANTS_SOURCE, MUTANTS, apply_mutant

from grader.check import Outcome, run_checks
from grader.grading import grade_notebook
from grader.harness import checks_on, code_cells, redefined, score
from grader.records import Limits, Status

pytestmark = [
    pytest.mark.kernel,
    # torch.load(weights_only=True) of a quantized state_dict (grader/protocol.py reading the
    # int8 models) warns once per process about torch's legacy storage and quantized tensor
    # creation; this suite turns warnings into errors, the grader does not.
    pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning"),
    pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor, torch.quantize_per_channel"),
]

REFERENCE = REPO / "solutions" / "hw4" / "hw4.ipynb"
TEMPLATE = REPO / "assignments" / "hw4" / "hw4.ipynb"
HIDDEN = REPO / "solutions" / "hw4" / "checks"
PUBLIC = REPO / "assignments" / "hw4" / "checks"
LIMITS = Limits(cell_timeout_s=60, notebook_timeout_s=180, call_timeout_s=30)

# The hidden check that must fail for each wrong version (others may fail too).
CAUGHT_BY = {
    "round_before_divide": "test_linear_quantize_exact",
    "zero_point_not_clamped": "test_affine_qparams_zero_point_clamped",
    "int8_accumulation": "test_quantized_linear_exact",
    "per_tensor_scale": "test_symmetric_per_channel_scale",
    "qat_without_ste": "test_fake_quantize_ste_gradient",
    "float_model_as_quantized": "test_ptq_int8_really_quantized",
    "calibration_skipped": "test_ptq_int8_accuracy",
    "dynamic_not_quantized": "test_dynamic_quantize",
    "bias_scale_without_input_scale": "test_quantize_bias",
    "zero_point_fold_sign": "test_shift_bias",
    "bn_folded_with_variance": "test_fold_bn_matches_conv_then_bn",
    "empty_cluster_zeroed": "test_update_codebook",
    "codebook_never_updated": "test_kmeans_quantize_fixed_point",
}


@pytest.mark.parametrize("seed", [11, 2024, 987654321])
def test_reference_earns_every_point_on_several_draws(reference, seed):
    _, student = reference
    results = run_checks(HIDDEN, student, seed)
    failed = [f"{r.name}: {r.message}" for r in results if r.outcome is not Outcome.PASSED]
    assert not failed
    assert score(results)[1] >= 40


def test_reference_passes_the_public_checks(reference):
    _, student = reference
    results = run_checks(PUBLIC, student, 0)
    assert all(r.outcome is Outcome.PASSED for r in results), [r.message for r in results]


def test_every_wrong_version_names_the_check_that_catches_it():
    assert set(CAUGHT_BY) == set(MUTANTS) - {"constants"}


@pytest.mark.parametrize("name", sorted(n for n in MUTANTS if n != "constants"))
def test_each_wrong_version_loses_points(reference, name):
    session, student = reference
    original = code_cells(REFERENCE)
    with redefined(session, original, apply_mutant(original, name)):
        results = run_checks(HIDDEN, student, seed=5)
    earned, possible = score(results)
    outcomes = {r.name.partition("::")[2]: r.outcome for r in results}
    assert outcomes[CAUGHT_BY[name]] is Outcome.FAILED, f"{name} passed {CAUGHT_BY[name]}"
    assert Outcome.ERROR not in outcomes.values(), [r.message for r in results if r.outcome
                                                    is Outcome.ERROR]
    assert earned < possible, f"{name} kept every point"
    assert earned >= possible / 2, f"{name} lost more than its bug should cost"


def test_public_answers_as_constants_fail_the_hidden_checks(tmp_path):
    cells = apply_mutant(code_cells(REFERENCE), "constants")
    assert cells[-1] == CONSTANTS_SOURCE
    # The constants cell runs on its own and redefines every graded function, so the kernel of
    # the reference with it appended answers the checks exactly as this one-cell notebook does,
    # without the reference's training; one execution serves both sets of checks.
    notebook = write_notebook(tmp_path / "hw4.ipynb", CONSTANTS_SOURCE)
    execution, (public, hidden) = checks_on(notebook, LIMITS, 1, PUBLIC, HIDDEN)
    assert execution.status is Status.OK, execution.detail
    public_earned, public_possible = score(public)
    hidden_earned, hidden_possible = score(hidden)
    # constants pass some public cases, and nearly nothing the hidden checks draw
    assert public_earned / public_possible > hidden_earned / hidden_possible
    assert hidden_earned <= 0.15 * hidden_possible
    assert all(r.outcome is not Outcome.ERROR for r in hidden), [r.message for r in hidden]


def test_the_untouched_template_scores_zero_without_breaking_anything():
    execution, checks = grade_notebook(TEMPLATE, HIDDEN, LIMITS, seed=3)
    results = checks.results
    assert execution.status is Status.CELL_ERROR
    assert "NotImplementedError" in execution.detail
    assert score(results)[0] == 0
    assert all(r.outcome is Outcome.FAILED for r in results)  # no grader errors
