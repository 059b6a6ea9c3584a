"""Expected failures: the CLI turns these into one-line messages (exit 1), never tracebacks.

Library messages say what went wrong in library terms. Where the user has a next step, the error carries
it as `next_step` (a code, e.g. "import" or "own_weights") with the `variant`, and the CLI adds the
command that does it (`s2mlp_cli.cli._errors`); the library never names a command-line flag.
"""

from __future__ import annotations


class S2MLPError(Exception):
    """An expected failure whose message already says what went wrong.

    `param` names the argument at fault (a usage problem: the CLI maps it to its flag and exits 2);
    `next_step` / `variant` say what the user can do about it; `advice` is that step in library terms,
    appended to the message (the CLI replaces it with the command).
    """

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        next_step: str | None = None,
        variant: str | None = None,
        advice: str | None = None,
    ) -> None:
        super().__init__(message + (f"; {advice}" if advice else ""))
        self.message = message
        self.param = param
        self.next_step = next_step
        self.variant = variant


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
