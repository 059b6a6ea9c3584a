"""Expected failures: the CLI turns these into one-line messages (exit 1), never tracebacks."""


class S2MLPError(Exception):
    """An expected failure whose message already says what went wrong and what to do next."""


class CardError(S2MLPError):
    """A zoo card that is missing, malformed or names something unknown."""


class UnknownModelError(S2MLPError, KeyError):
    """A model name that matches no card; the message lists the closest names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WeightsUnavailableError(S2MLPError):
    """Pretrained weights were asked for but none can be had for this variant."""
