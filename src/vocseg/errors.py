"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations


class VocsegError(Exception):
    """A problem the user can fix: `message` says what is wrong, `hint` what to do."""

    def __init__(self, message: str, hint: str = "", exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


# ---------------------------------------------------------------- what a file-system fault left behind

# Set by the code that knows (e.g. a training run): what is intact after a fault and the command
# that continues. The CLI edge (`vocseg.cli`) reads it when it turns an OSError into one line.
KEPT_ATTR = "vocseg_kept"
NEXT_ATTR = "vocseg_next"
WHERE_ATTR = "vocseg_where"


class FaultContext:
    """`with FaultContext(kept=lambda: "...", next_command="vocseg resume RUN", where=RUN):` notes
    on any OSError (or a data-loader worker's death) raised inside what was kept, where, and the
    command that continues; the exception itself goes on unchanged. `kept` and `next_command`
    may be callables, asked only when a fault happens (what is on disk then)."""

    def __init__(self, *, kept: object = None, next_command: object = "", where: object = None) -> None:
        self.kept, self.next_command, self.where = kept, next_command, where

    def __enter__(self) -> FaultContext:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, (OSError, RuntimeError)) and not hasattr(exc, NEXT_ATTR):
            try:
                kept = self.kept() if callable(self.kept) else self.kept
                next_command = self.next_command() if callable(self.next_command) else self.next_command
            except Exception:  # noqa: BLE001 - the note must never hide the fault
                kept, next_command = None, ""
            try:
                setattr(exc, KEPT_ATTR, kept)
                setattr(exc, NEXT_ATTR, next_command)
                setattr(exc, WHERE_ATTR, self.where)
            except (AttributeError, TypeError):
                pass
        return False
