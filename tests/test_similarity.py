"""Tests for grader/tools/similarity.py: the code a student wrote, and the pairs flagged as similar.

The notebooks are written into tmp_path: a template with three tasks, an honest solution (ann),
a near-copy of it with other names, comments and spacing (ben), and a second honest solution
written another way (cat).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_notebook

from grader.tools.similarity import code_lines, compare, homework_similarity, own_code

SETUP = "import torch\ntorch.set_num_threads(1)"
STUBS = [
    'def magnitude_mask(weight, sparsity):\n    """Mask keeping the largest entries."""\n'
    "    # YOUR CODE HERE\n    raise NotImplementedError()",
    'def channel_norms(conv):\n    """L1 norm of each output channel."""\n'
    "    # YOUR CODE HERE\n    raise NotImplementedError()",
    'def keep_channels(conv, keep):\n    """A Conv2d with the output channels in keep."""\n'
    "    # YOUR CODE HERE\n    raise NotImplementedError()",
]
PUBLIC = "assert magnitude_mask(torch.tensor([1.0, -3.0, 2.0]), 1 / 3).tolist() == [0, 1, 1]"

ANN = [
    '''def magnitude_mask(weight, sparsity):
    """Mask keeping the largest entries."""
    n_prune = int(round(sparsity * weight.numel()))
    if n_prune == 0:
        return torch.ones_like(weight)
    threshold = weight.abs().flatten().kthvalue(n_prune).values
    return (weight.abs() > threshold).float()''',
    '''def channel_norms(conv):
    """L1 norm of each output channel."""
    return conv.weight.detach().abs().sum(dim=(1, 2, 3))''',
    '''def keep_channels(conv, keep):
    """A Conv2d with the output channels in keep."""
    new = torch.nn.Conv2d(conv.in_channels, len(keep), conv.kernel_size,
                          stride=conv.stride, padding=conv.padding,
                          bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight[keep])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[keep])
    return new''',
]
# ann's code with every name changed, other comments and spacing: still a copy
BEN = [
    '''def magnitude_mask(weight, sparsity):
    """Mask keeping the largest entries."""
    # how many weights go
    k = int(round(sparsity*weight.numel()))
    if k == 0:
        return torch.ones_like(weight)
    cut = weight.abs().flatten().kthvalue(k).values   # the k-th smallest magnitude
    return (weight.abs() > cut).float()''',
    '''def channel_norms(conv):
    """L1 norm of each output channel."""
    # sum over everything but the output channel
    return conv.weight.detach().abs().sum(dim=(1, 2, 3))''',
    '''def keep_channels(conv, keep):
    """A Conv2d with the output channels in keep."""
    layer = torch.nn.Conv2d(conv.in_channels, len(keep), conv.kernel_size,
                            stride=conv.stride, padding=conv.padding,
                            bias=conv.bias is not None)
    with torch.no_grad():
        layer.weight.copy_(conv.weight[keep])   # copy the kept filters
        if conv.bias is not None:
            layer.bias.copy_(conv.bias[keep])
    return layer''',
]
# the same tasks solved independently
CAT = [
    '''def magnitude_mask(weight, sparsity):
    """Mask keeping the largest entries."""
    flat = weight.reshape(-1)
    order = torch.argsort(flat.abs())
    mask = torch.ones(flat.shape[0])
    mask[order[: int(sparsity * len(flat) + 0.5)]] = 0.0
    return mask.reshape(weight.shape)''',
    '''def channel_norms(conv):
    """L1 norm of each output channel."""
    w = conv.weight.data
    return torch.stack([w[c].abs().sum() for c in range(w.shape[0])])''',
    '''def keep_channels(conv, keep):
    """A Conv2d with the output channels in keep."""
    import copy
    out = copy.deepcopy(conv)
    idx = torch.as_tensor(keep, dtype=torch.long)
    out.weight = torch.nn.Parameter(conv.weight.data.index_select(0, idx).clone())
    if out.bias is not None:
        out.bias = torch.nn.Parameter(conv.bias.data.index_select(0, idx).clone())
    out.out_channels = len(keep)
    return out''',
]


def notebook(path: Path, tasks: list[str]) -> Path:
    cells = [SETUP]
    for i, task in enumerate(tasks):
        cells.append(task)
        if i == 0:
            cells.append(PUBLIC)
    return write_notebook(path, *cells)


@pytest.fixture
def homework(tmp_path: Path) -> dict[str, Path]:
    return {"template": notebook(tmp_path / "template" / "hw2.ipynb", STUBS),
            **{name: notebook(tmp_path / name / "hw2.ipynb", tasks)
               for name, tasks in (("ann", ANN), ("ben", BEN), ("cat", CAT),
                                   ("dan", STUBS), ("eve", STUBS))}}


def test_own_code_leaves_out_the_template(homework: dict[str, Path]) -> None:
    template = code_lines(homework["template"])
    ann = own_code("ann", code_lines(homework["ann"]), template)
    # the signatures, docstrings, setup and public check are the template's; the bodies are ann's
    assert not any(line.startswith("def ") or '"""' in line for line in ann.lines)
    assert "torch.set_num_threads(1)" not in ann.lines and PUBLIC not in ann.lines
    assert "    n_prune = int(round(sparsity * weight.numel()))" in ann.lines
    assert "    return new" in ann.lines
    # the stubs' own lines went away with the student's edit
    assert not any("NotImplementedError" in line for line in ann.lines)
    assert own_code("dan", code_lines(homework["dan"]), template).lines == ()


def test_a_near_copy_is_flagged_and_an_honest_pair_is_not(homework: dict[str, Path]) -> None:
    result = homework_similarity("hw2", [(s, homework[s]) for s in ("ann", "ben", "cat")],
                                 homework["template"], threshold=0.5)
    assert [(p.first, p.second) for p in result.pairs] == [("ann", "ben")]
    copy = result.pairs[0]
    assert copy.first_share > 0.8 and copy.second_share > 0.8
    shared = {line.text.strip() for line in copy.shared_first}
    assert "return (weight.abs() > threshold).float()" in shared
    assert "new.weight.copy_(conv.weight[keep])" in shared
    assert result.compared == ("ann", "ben", "cat")
    assert result.left_out == ()
    # with no threshold at all, the honest pairs still share (next to) nothing
    every, _, _ = compare([own_code(s, code_lines(homework[s]), code_lines(homework["template"]))
                           for s in ("ann", "ben", "cat")], threshold=0.0)
    shares = {(p.first, p.second): p.share for p in every}
    assert shares[("ann", "ben")] > 0.8
    assert shares.get(("ann", "cat"), 0.0) < 0.2 and shares.get(("ben", "cat"), 0.0) < 0.2


def test_untouched_templates_are_not_copies_of_each_other(homework: dict[str, Path]) -> None:
    result = homework_similarity("hw2", [("dan", homework["dan"]), ("eve", homework["eve"])],
                                 homework["template"], threshold=0.5)
    assert result.pairs == ()
    assert result.left_out == (("dan", "too little code of their own to compare"),
                               ("eve", "too little code of their own to compare"))


def test_without_the_template_its_code_counts_as_shared(homework: dict[str, Path]) -> None:
    result = homework_similarity("hw2", [("dan", homework["dan"]), ("eve", homework["eve"])],
                                 homework["template"].with_name("gone.ipynb"), threshold=0.5)
    assert [(p.first, p.second, p.share) for p in result.pairs] == [("dan", "eve", 1.0)]
    assert "no template" in result.template


def test_a_gone_file_and_a_broken_one_are_named(homework: dict[str, Path],
                                                tmp_path: Path) -> None:
    broken = tmp_path / "fay" / "hw2.ipynb"
    broken.parent.mkdir()
    broken.write_text("{not json", encoding="utf-8")
    gone = tmp_path / "gus" / "hw2.ipynb"
    result = homework_similarity("hw2", [("ann", homework["ann"]), ("ben", homework["ben"]),
                                         ("fay", broken), ("gus", gone)],
                                 homework["template"], threshold=0.5)
    assert [(p.first, p.second) for p in result.pairs] == [("ann", "ben")]
    reasons = dict(result.left_out)
    assert reasons["gus"] == f"file gone: {gone}"
    assert reasons["fay"].startswith(f"{broken}: not a notebook")


def test_shares_do_not_depend_on_the_process_hash_seed(homework: dict[str, Path]) -> None:
    # Python salts str hashes per process; the shares must come out the same in any process.
    import os
    import subprocess
    import sys

    script = ("import sys; from pathlib import Path; from grader.tools.similarity import *; "
              "r = homework_similarity('hw2', [('ann', Path(sys.argv[1])), "
              "('ben', Path(sys.argv[2]))], Path(sys.argv[3]), 0.1); "
              "print(repr((r.pairs[0].first_share, r.pairs[0].second_share)))")
    args = [str(homework[k]) for k in ("ann", "ben", "template")]
    outputs = {subprocess.run([sys.executable, "-c", script, *args], check=True, text=True,
                              capture_output=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2", "3")}
    assert len(outputs) == 1, outputs


def test_the_quick_bound_never_drops_a_pair_above_the_threshold(
        homework: dict[str, Path]) -> None:
    # dot copies one of ann's three functions: shares in between, on both sides of thresholds
    template = code_lines(homework["template"])
    dot = notebook(homework["ann"].parents[1] / "dot" / "hw2.ipynb", [ANN[0], *CAT[1:]])
    codes = [own_code(s, code_lines(p), template)
             for s, p in [*((s, homework[s]) for s in ("ann", "ben", "cat")), ("dot", dot)]]
    every = {(p.first, p.second): p.share for p in compare(codes, threshold=0.0)[0]}
    assert any(0.2 < share < 0.8 for share in every.values()), every
    for threshold in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        flagged = {(p.first, p.second) for p in compare(codes, threshold)[0]}
        assert flagged == {pair for pair, share in every.items() if share >= threshold}
