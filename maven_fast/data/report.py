"""Problems found in user data: errors that stop, and reported issues that do not.

Every reader in :mod:`maven_fast.data` follows one rule: a problem it can work
around is *reported* (a :class:`DataWarning` is emitted and an :class:`Issue`
is appended to the :class:`Report` it returns), and a problem it cannot work
around raises :class:`DataError`. Both name the file, the line where there is
one, and what to do about it. Nothing is dropped silently.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Iterator


class DataError(ValueError):
    """Unusable input. The message names the file (and line) and the fix."""

    def __init__(self, path: str | os.PathLike, message: str, *, line: int | None = None,
                 fix: str | None = None):
        self.path = str(path)
        self.line = line
        self.reason = message
        self.fix = fix
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}" + (f" (fix: {fix})" if fix else ""))


class DataWarning(UserWarning):
    """A recoverable data problem; the same text is also kept in a :class:`Report`."""


@dataclass(frozen=True)
class Issue:
    """One recoverable problem: where it is and what was done about it."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Report:
    """The recoverable problems met while reading some data.

    ``add`` records an issue and (by default) emits a :class:`DataWarning`
    naming the same file and line, so problems are visible both to people
    reading logs and to code inspecting the returned report.
    """

    issues: list[Issue] = field(default_factory=list)

    def add(self, path: str | os.PathLike, message: str, *, line: int | None = None,
            warn: bool = True) -> Issue:
        issue = Issue(str(path), message, line)
        self.issues.append(issue)
        if warn:
            warnings.warn(str(issue), DataWarning, stacklevel=3)
        return issue

    def extend(self, other: "Report") -> None:
        """Append another report's issues (they were already warned about)."""
        self.issues.extend(other.issues)

    def __len__(self) -> int:
        return len(self.issues)

    def __iter__(self) -> Iterator[Issue]:
        return iter(self.issues)

    def __bool__(self) -> bool:
        return bool(self.issues)

    def lines(self) -> list[str]:
        return [str(i) for i in self.issues]

    def to_list(self) -> list[dict]:
        return [i.to_dict() for i in self.issues]
