"""The jail a kernel (or a judge) enters after the zygote forked it: Linux namespaces of its own
(user, mount, pid, ipc, network, uts), private mounts (a fresh /tmp and /dev/shm, the other
kernels' slots covered, read-only folders), no capabilities, resource limits. The primitives
the zygote's serve loop (``serve.py``) calls, through libc (ctypes): Linux only.

Nothing here imports the grader: inside the sandbox there is none.
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import signal

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
CAP_LAST = 63

_libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def own_namespaces() -> None:
    """Move this (forked) process into new user, mount, ipc, network and uts namespaces, and
    make its children start a new pid namespace; map its own ids, nothing else."""
    uid, gid = os.getuid(), os.getgid()
    # the zygote is not dumpable (see serve); its child must be, to write its own id maps
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET
                         | CLONE_NEWUTS | CLONE_NEWPID), "unshare")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 0x1, 0x2, 0x4, 0x20
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000


def mount(source: str, target: str, kind: str | None, flags: int, data: str = "") -> None:
    check(_libc.mount(source.encode(), target.encode(), kind.encode() if kind else None,
                       flags, data.encode() or None), f"mount {target}")


def _mounts_under(top: str) -> list[str]:
    """The outermost mount points below ``top`` (a Python environment under /tmp, say)."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)),
                           line.split()[4])
            if point.startswith(top + "/"):
                points.append(point)
    return sorted({p for p in points
                   if not any(p != q and p.startswith(q + "/") for q in points)})


def _fresh_tmp(park: str, tmp_mb: int) -> None:
    """An empty tmpfs on /tmp that still shows what was mounted below /tmp (the Python
    environment may live there), but nothing anyone wrote there."""
    below = _mounts_under("/tmp")
    os.mkdir(park)
    mount("/tmp", park, None, MS_BIND | MS_REC)
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={tmp_mb}m")
    for point in below:
        os.makedirs(point, mode=0o755, exist_ok=True)
        mount(park + point[len("/tmp"):], point, None, MS_BIND | MS_REC)
    check(_libc.umount2(park.encode(), 0x2), "umount")  # MNT_DETACH
    os.rmdir(park)


def private_mounts(slot: str, slots: str, tmp_mb: int, hidden: list[str],
                    read_only: list[str]) -> None:
    """A fresh, empty /tmp and /dev/shm for this kernel alone, of the slots folder only its own
    slot in sight, each ``hidden`` folder (the zygote's own home, say: every kernel could
    write there, and the next read it) covered by an empty read-only one, and each
    ``read_only`` folder (in its slot) made read-only; no mount event leaks out of its
    namespace."""
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    for folder in hidden:
        mount("tmpfs", folder, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0555,size=4k")
    _fresh_tmp(os.path.join(slot, ".tmp"), tmp_mb)
    if os.path.isdir("/dev/shm"):
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m")
    # hide the other slots: park this one, cover the folder, put this one back
    parked = "/tmp/.slot"
    os.mkdir(parked)
    mount(slot, parked, None, MS_BIND | MS_REC)
    mount("tmpfs", slots, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    os.makedirs(slot)
    mount(parked, slot, None, MS_BIND | MS_REC)
    check(_libc.umount2(parked.encode(), 0x2), "umount")  # MNT_DETACH
    os.rmdir(parked)
    for folder in read_only:
        mount(folder, folder, None, MS_BIND | MS_REC)
        mount("none", folder, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """No capability left, none to regain: the kernel is an ordinary unprivileged process."""
    for cap in range(CAP_LAST + 1):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # past the last known one: EINVAL, fine
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    empty = (_CapData * 2)()
    check(_libc.capset(ctypes.byref(header), empty), "capset")
    check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _limit(kind: int, value: int) -> None:
    if value <= 0:
        return
    _soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))




def die_with_parent() -> None:
    """This process is killed when its parent dies (set again after unshare, which clears it)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def not_dumpable() -> None:
    """No other process of this user may read or trace this one's memory."""
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def no_new_privileges() -> None:
    """Nothing this process executes can gain privileges (setuid programs, file capabilities)."""
    check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def set_limits(memory_mb: int, cpu_s: int, fsize_mb: int, nproc: int) -> None:
    """The kernel's resource limits (0: none): address space, CPU seconds, largest file written,
    tasks; and no core dumps."""
    _limit(resource.RLIMIT_AS, memory_mb * 2**20)
    _limit(resource.RLIMIT_CPU, cpu_s)
    _limit(resource.RLIMIT_FSIZE, fsize_mb * 2**20)
    _limit(resource.RLIMIT_NPROC, nproc)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
