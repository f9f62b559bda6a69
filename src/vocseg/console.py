"""The two consoles every vocseg command prints to (results on stdout, progress and warnings on
stderr), and a stream that swallows what MMEngine prints when not --verbose. Imports nothing of
vocseg: everything may import it."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class NullStream(io.TextIOBase):
    """A text stream that discards what is written to it."""

    def write(self, s: str) -> int:
        return len(s)


@contextlib.contextmanager
def quiet_stdout(verbose: bool) -> Iterator[None]:
    """Discard what is printed to stdout inside the block, unless `verbose`."""
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(NullStream()):
        yield
