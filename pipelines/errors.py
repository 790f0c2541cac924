"""Which errors say the input is wrong (a user's to fix, exit code 2 on the command line, 400-like) rather than a
bug: shared by the command line and the HTTP service's start-up, so both tell them apart alike."""

from __future__ import annotations

BAD_INPUT = (ValueError, FileNotFoundError)  # SourceError, FeaturesError, SearchError and FilterError among them
# Bad-input errors that are not ValueErrors, by qualified name: matching names instead of importing the classes keeps
# the command line's start free of torch and ffmpeg (an error of a module never imported cannot have been raised).
BAD_INPUT_NAMES = frozenset({"glscl.checkpoint.CheckpointError", "workers.ingest.probe.VideoError"})


def is_bad_input(error: BaseException) -> bool:
    """Whether the error says the input or an option is wrong (exit code 2)."""
    names = {f"{kind.__module__}.{kind.__qualname__}" for kind in type(error).__mro__}
    return isinstance(error, BAD_INPUT) or bool(names & BAD_INPUT_NAMES)
