"""A Unix socket's address both ends of the fork server's channel agree on (portable: the grader
imports it on every platform, whatever it then does with it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def short_address(path: str) -> Iterator[str]:
    """``path`` as a Unix socket's address: itself, or, when it is longer than an address may
    be (108 bytes; a deep temporary folder), the same file through /proc/self/fd and an open
    descriptor of its folder. The grader connects the same way."""
    if len(os.fsencode(path)) < 100:
        yield path
        return
    folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{os.path.basename(path)}"
    finally:
        os.close(folder)
