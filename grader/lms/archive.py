"""An LMS's zip download, read safely: every member is checked before anything is read.

A member whose path leads outside the zip (an absolute path, ``..``, a backslash or a drive
letter: "zip slip"), a symbolic link, an encrypted member, a member or a zip too large, or a name
listed twice is a problem; the caller reports them all by name. Names are read as the LMS wrote
them: UTF-8 (a zip that did not flag its UTF-8 names is decoded as UTF-8 all the same, the way
Canvas's rubyzip writes them), in Unicode's composed form (NFC).
"""

from __future__ import annotations

import contextlib
import stat
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from grader.errors import LmsError
from grader.text import LINE_CHARS, one_line

MAX_MEMBERS = 20_000
MAX_MEMBER_BYTES = 200 * 2**20  # a notebook with its outputs, or a data file beside it
MAX_TOTAL_BYTES = 8 * 2**30
_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1


@dataclass(frozen=True)
class Member:
    """A file in the zip: its name (a relative POSIX path, NFC) and its size in bytes."""

    name: str
    size: int
    info: zipfile.ZipInfo

    @property
    def parts(self) -> tuple[str, ...]:
        return PurePosixPath(self.name).parts


def _name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    if not info.flag_bits & _UTF8_FLAG:  # zipfile read it as cp437: undo that if it is UTF-8
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            name = name.encode("cp437").decode("utf-8")
    return unicodedata.normalize("NFC", name)


def _outside(name: str) -> bool:
    parts = name.split("/")
    return (name.startswith("/") or "\\" in name or "\0" in name
            or (len(name) > 1 and name[1] == ":") or any(p in ("..", ".") for p in parts))


def members(path: Path) -> list[Member]:
    """The files of the zip at ``path`` (folders left out), or ``LmsError`` listing every
    member that cannot be taken as it is."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except FileNotFoundError:
        raise LmsError(str(path), ["no such file"]) from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise LmsError(str(path), [f"not a zip file the LMS wrote: {exc}"]) from None
    problems: list[str] = []
    if len(infos) > MAX_MEMBERS:
        raise LmsError(str(path), [f"{len(infos)} members, more than {MAX_MEMBERS}"])
    found: list[Member] = []
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = _name(info)
        shown = repr(one_line(name, LINE_CHARS))
        if _outside(name):
            problems.append(f"member {shown}: its path leads outside the zip (zip slip); an "
                            f"LMS never writes one")
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            problems.append(f"member {shown}: a symbolic link")
            continue
        if info.is_dir():
            continue
        if info.flag_bits & _ENCRYPTED_FLAG:
            problems.append(f"member {shown}: encrypted")
        if info.file_size > MAX_MEMBER_BYTES:
            problems.append(f"member {shown}: {info.file_size} bytes, more than "
                            f"{MAX_MEMBER_BYTES} once unpacked")
        if name in seen:
            problems.append(f"member {shown}: listed twice")
        seen.add(name)
        total += info.file_size
        found.append(Member(name, info.file_size, info))
    if total > MAX_TOTAL_BYTES:
        problems.append(f"{total} bytes once unpacked, more than {MAX_TOTAL_BYTES}")
    if problems:
        raise LmsError(str(path), problems)
    return found


def read(path: Path, member: Member) -> bytes:
    """The bytes of ``member`` (no more than the size its entry declares; a member whose data
    does not match its checksum is an ``LmsError``)."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open(member.info) as f:
            return f.read(MAX_MEMBER_BYTES + 1)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
        raise LmsError(str(path), [f"member {one_line(member.name, LINE_CHARS)!r}: cannot be read: "
                                   f"{exc}"]) from None
