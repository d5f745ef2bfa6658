"""A judge: the grader's judging code run over files a notebook wrote, in a process that holds no
secret (forked by the zygote on Linux, a plain subprocess elsewhere: ``launch.py``).

It runs the function ``name`` of ``private``/judge.py (the grader's code) on the files in
``artifacts`` (read-only) and the inputs in ``private``/inputs.pt, and writes
``{"ok", "value" | "error"}`` to ``private``/result.pt. It trusts the grader's code and inputs;
the grader trusts nothing it writes beyond tensors and plain values.
"""

from __future__ import annotations

import os
import traceback
from typing import Any


def judge(private: str, name: str, artifacts: str) -> None:
    import torch

    torch.set_num_threads(1)
    inputs = torch.load(os.path.join(private, "inputs.pt"), weights_only=True)
    with open(os.path.join(private, "judge.py"), encoding="utf-8") as f:
        source = f.read()
    try:
        namespace: dict[str, Any] = {"__name__": "judge"}
        exec(compile(source, "judge.py", "exec"), namespace)  # the grader's code
        result = {"ok": True, "value": namespace[name](artifacts, inputs)}
    except BaseException as exc:  # noqa: BLE001 - whatever the files did is the verdict
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        result = {"ok": False, "error": text[-2000:]}
    torch.save(result, os.path.join(private, "result.pt"))
