"""Every expected failure of the library, in one place: the CLI turns these into one-line messages.

Library messages say what went wrong in library terms and never name a command-line flag or command.
Where the user has a next step, the error carries it as `next_step` (a code, e.g. "import" or
"own_weights") with the `variant`; `advice` is that step in library words, appended to the message for
Python callers. The CLI replaces the advice with the command that does it (`s2mlp_cli.cli._errors`).
"""

from __future__ import annotations

from typing import Any


class S2MLPError(Exception):
    """An expected failure whose message already says what went wrong.

    `param` names the argument at fault (a usage problem: the CLI maps it to its flag and exits 2);
    `next_step` / `variant` / `step_args` say what the user can do about it (`step_args`: arguments of
    that step, e.g. the Hub file a pull should fetch); `advice` is that step in library terms.
    """

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        next_step: str | None = None,
        variant: str | None = None,
        advice: str | None = None,
        step_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message + (f"; {advice}" if advice else ""))
        self.message = message
        self.param = param
        self.next_step = next_step
        self.variant = variant
        self.advice = advice
        self.step_args = dict(step_args or {})


class ProblemsError(S2MLPError):
    """Everything wrong with a request, found before any work starts, named in one message."""

    def __init__(self, problems: list[S2MLPError]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems

    @property
    def usage(self) -> bool:
        return any(p.param for p in self.problems)


class CardError(S2MLPError):
    """A zoo card that is missing, malformed or names something unknown."""


class UnknownModelError(S2MLPError, KeyError):
    """A model name that matches no card; the message lists the closest names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WeightsUnavailableError(S2MLPError):
    """Pretrained weights were asked for but none can be had for this variant."""


class WeightsError(S2MLPError):
    """A weights file that cannot be read safely, or does not fit the model."""


class HubError(S2MLPError):
    """A download that failed, or a file that did not verify."""


class DataError(S2MLPError):
    """A dataset that cannot be found, read or labelled."""


class PushError(S2MLPError):
    """A push that could not be made; nothing was committed."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised where the program is so that cleanup runs as it does for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class PartialResult(BaseException):
    """A job stopped by a signal after finishing part of its work: `doc` holds what finished (marked
    partial), already written where the request asked (`written`); the command prints it, then exits
    128 + `signum`."""

    def __init__(self, doc: Any, signum: int, kept: str, written: str = "") -> None:
        super().__init__(kept)
        self.doc, self.signum, self.kept, self.written = doc, signum, kept, written


class Interrupted(BaseException):
    """A job stopped by a signal (SIGINT, SIGTERM, SIGHUP) after putting its work somewhere safe; `kept`
    says what was kept (e.g. a resumable state). Exits 128 + `signum` from the command line."""

    def __init__(self, signum: int, kept: str, next_step: str | None = None) -> None:
        super().__init__(kept)
        self.signum = signum
        self.kept = kept
        self.next_step = next_step
