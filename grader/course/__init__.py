"""The course's rules and records that every part reads: ``config`` (course.toml), ``rules``
(late tiers and the pass rule, pure functions) and ``notebook`` (reading a notebook file, the
solution markers)."""
