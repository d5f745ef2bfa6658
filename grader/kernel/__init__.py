"""The student's kernel and its sandbox: where student code runs, and how the grader talks to it.

- ``sandbox``: bubblewrap around the zygote; ``zygote``: the run's kernel fork server and each
  grading process's channel to it; ``bridge/``: what runs inside the sandbox;
- ``session``: one kernel as a process (its workspace, its start, the session the checks use);
- ``protocol``: the grader's end of the check protocol (``Student``: calls, data back);
- ``judge``: a sandboxed process that opens the files a kernel wrote.
"""
