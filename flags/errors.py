"""Domain errors of the reads, which every door translates in its own form.

`NotFound` is raised by the selectors (and the lookups of history and approvals) for a thing
asked for by key that does not exist, or that the asker may not see (existence is not
leaked). The API answers 404 JSON, the admin a 404 page, the command line one line on stderr
and exit code 2.
"""

from __future__ import annotations

from collections.abc import Sequence


class NotFound(Exception):
    def __init__(
        self, kind: str, key: object, *, within: str = "", known: Sequence[str] = ()
    ) -> None:
        self.kind = kind
        self.key = key
        self.within = within  # e.g. "project 'shop'"
        self.known = tuple(known)  # the keys that do exist, where they help
        super().__init__(f"no {self.subject}")

    @property
    def subject(self) -> str:
        """What was asked for: "flag 'dark-mode' in project 'shop'"."""
        key = repr(self.key) if isinstance(self.key, str) else str(self.key)
        where = f" in {self.within}" if self.within else ""
        return f"{self.kind} {key}{where}"
