"""User-facing errors: each one is a single paragraph that names where the problem is."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user. The CLI prints it as one paragraph and exits with status 2."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column is not None:
            where.append(f"column {self.column}")
        head = ", ".join(where)
        if self.field:
            head = f"{head}: {self.field}" if head else self.field
        return f"{head}: {self.message}" if head else self.message


class SpecError(UserError):
    """A spec file or a parameter override is not a valid network description."""


class DataError(UserError):
    """A dataset is missing, unreadable or inconsistent."""


class CheckpointError(UserError):
    """A weights file is missing, not ours, or does not fit the model."""


class TrainingError(UserError):
    """Training stopped because the loss became NaN or infinite (usually too high a learning rate).

    Exit status 3 tells it apart from bad input (2): the settings were valid but diverged.
    """

    exit_code = 3


class ExportError(UserError):
    """An export cannot be written (a missing optional package) or does not reproduce the model."""


class FileKindError(UserError):
    """A file of another kind than the command takes (a spec given to eval, an image to export)."""


class SearchError(UserError):
    """A search stopped short of its target (no proposal lowers the latency further): what it
    reached is kept. Exit status 3, as a diverged training: the input was valid."""

    exit_code = 3
