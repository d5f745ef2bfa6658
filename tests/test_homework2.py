"""Homework 2 under its hidden checks: the reference earns everything on several draws, the
template nothing, and every realistic wrong version loses points.

The reference runs once; each wrong version then redefines its functions in that live kernel
by re-running the mutated cells, which is what the kernel of a notebook holding those cells
looks like when the checks call into it, and is put back afterwards.

A full run of the hidden checks takes 20-40 s on this machine (two of them train a model in
the kernel). So that this file stays fast, each wrong version runs the checks that its bug must
trip (`CAUGHT_BY`), selected by name from the hidden check file: the same per-run draws as in
a real grading run.
"""

from __future__ import annotations

import pytest
from conftest import REPO
from hw2_mutants import CONSTANTS_SOURCE, MUTANTS, apply_mutant

from grader.check import Outcome, run_checks
from grader.grading import grade_notebook
from grader.harness import code_cells, redefined, score
from grader.records import Limits, Status

pytestmark = pytest.mark.kernel

REFERENCE = REPO / "solutions" / "hw2" / "hw2.ipynb"
TEMPLATE = REPO / "assignments" / "hw2" / "hw2.ipynb"
HIDDEN = REPO / "solutions" / "hw2" / "checks"
PUBLIC = REPO / "assignments" / "hw2" / "checks"
# generous: the notebook trains twice, and the machine is shared
LIMITS = Limits(cell_timeout_s=120, notebook_timeout_s=300, call_timeout_s=60)

# wrong version -> the hidden checks its bug must fail (file stem :: check name)
CAUGHT_BY: dict[str, tuple[str, ...]] = {
    "ties_counted_twice": ("test_hw2::test_magnitude_prune_exact_masks",
                           "test_hw2::test_magnitude_prune_zero_count"),
    "layer_skipped_in_global_pruning": ("test_hw2::test_global_magnitude_prune",
                                        "test_hw2::test_global_pruning_and_fine_tuning_accuracy"),
    "largest_weights_pruned": ("test_hw2::test_global_magnitude_prune",
                               "test_hw2::test_global_pruning_and_fine_tuning_accuracy"),
    "batchnorm_left_unsliced": ("test_hw2::test_select_channels",
                                "test_hw2::test_channel_prune_structure_macs_params",
                                "test_hw2::test_channel_prune_keeps_the_important_channels",
                                "test_hw2::test_sort_channels_is_an_equivalence",
                                "test_hw2::test_channel_pruning_and_fine_tuning_accuracy"),
    "mask_not_reapplied": ("test_hw2::test_fine_tune_sparse_keeps_masks",
                           "test_hw2::test_global_pruning_and_fine_tuning_accuracy"),
    "original_model_mutated": ("test_hw2::test_channel_surgery_leaves_the_input_model_unchanged",),
    "scan_does_not_restore": ("test_hw2::test_sensitivity_scan_accuracies",
                              "test_hw2::test_sensitivity_scan_leaves_model_as_found"),
    "prune_remove_forgotten": ("test_hw2::test_global_prune_with_torch",),
    "bn_momentum_kept": ("test_hw2::test_recalibrate_bn",),
    "importance_from_own_filters": ("test_hw2::test_channel_importance",
                                    "test_hw2::test_channel_prune_keeps_the_important_channels",
                                    "test_hw2::test_sort_channels_is_an_equivalence"),
    "channels_sorted_ascending": ("test_hw2::test_sort_channels_is_an_equivalence",),
    "sparsity_over_all_parameters": ("test_hw2::test_model_sparsity",),
    "zeros_counted_in_sparse_macs": ("test_hw2::test_sparse_macs",),
    "global_count_one_short": ("test_hw2::test_global_magnitude_prune",
                               "test_hw2::test_global_magnitude_prune_edges"),
    "recalibrated_model_not_returned": ("test_hw2::test_recalibrate_bn",),
    "conv_bias_left_unsliced": (
        "test_hw2::test_select_channels_slices_biases_and_skips_a_missing_batchnorm",
        "test_hw2::test_channel_prune_prunes_every_conv_of_another_layout"),
    "float_ratio_only_for_named_convs": (
        "test_hw2::test_channel_prune_prunes_every_conv_of_another_layout",),
    "no_channel_kept": ("test_hw2::test_channel_prune_structure_macs_params",),
    "sparse_macs_as_float": ("test_hw2::test_sparse_macs",),
}


@pytest.mark.parametrize("seed", [11, 2024, 987654321])
def test_reference_earns_every_point_on_several_draws(reference, seed):
    _, student = reference
    results = run_checks(HIDDEN, student, seed)
    failed = [f"{r.name}: {r.message}" for r in results if r.outcome is not Outcome.PASSED]
    assert not failed
    assert score(results)[1] >= 45


def test_reference_passes_the_public_checks(reference):
    _, student = reference
    results = run_checks(PUBLIC, student, 0)
    assert all(r.outcome is Outcome.PASSED for r in results), [r.message for r in results]


def test_every_wrong_version_names_the_checks_that_catch_it():
    assert set(CAUGHT_BY) == set(MUTANTS) - {"constants"}
    names = {f"{path.stem}::{line.split('(')[0][4:]}"
             for path in HIDDEN.glob("test_*.py")
             for line in path.read_text(encoding="utf-8").splitlines()
             if line.startswith("def test_")}
    assert {c for checks in CAUGHT_BY.values() for c in checks} <= names


@pytest.mark.parametrize("name", sorted(CAUGHT_BY))
def test_each_wrong_version_loses_points(reference, name):
    session, student = reference
    original = code_cells(REFERENCE)
    with redefined(session, original, apply_mutant(original, name)):
        results = run_checks(HIDDEN, student, seed=5, select=CAUGHT_BY[name])
    earned, possible = score(results)
    assert earned < possible, f"{name} kept every point"
    passed = [r.name for r in results if r.outcome is not Outcome.FAILED]
    assert not passed, f"{name} should fail {passed} (errors are grader bugs): " + "; ".join(
        f"{r.name}: {r.message}" for r in results if r.outcome is not Outcome.FAILED)


def test_public_answers_as_constants_fail_the_hidden_checks(reference):
    session, student = reference
    original = code_cells(REFERENCE)
    cells = apply_mutant(original, "constants")
    assert cells[-1] == CONSTANTS_SOURCE
    with redefined(session, original, cells):
        public = run_checks(PUBLIC, student, seed=1)
        hidden = run_checks(HIDDEN, student, seed=1)
    public_earned, public_possible = score(public)
    hidden_earned, hidden_possible = score(hidden)
    # constants pass some public cases, and nearly nothing the hidden checks draw
    assert public_earned / public_possible > hidden_earned / hidden_possible
    assert hidden_earned <= 0.15 * hidden_possible
    # the reference is back: the public checks pass again
    assert all(r.outcome is Outcome.PASSED for r in run_checks(PUBLIC, student, 0))


def test_the_untouched_template_scores_zero_without_breaking_anything():
    execution, checks = grade_notebook(TEMPLATE, HIDDEN, LIMITS, seed=3)
    results = checks.results
    assert execution.status is Status.CELL_ERROR
    assert "NotImplementedError" in execution.detail
    assert score(results)[0] == 0
    assert all(r.outcome is Outcome.FAILED for r in results)  # no grader errors
