"""The one reading of a split list (an id list such as `ImageSets/Segmentation/val.txt`).

`prepare --check`, the schedule arithmetic (train size), the training/eval loader
(`vocseg.data.loading.VocsegVOCDataset`) and `vocseg eval --split FILE` all read lists through
`read_id_list`, so they agree on the ids:

- one id per line; blank lines are skipped, spaces/tabs around an id are dropped;
- LF, CRLF and CR line ends, and a UTF-8 byte-order mark, read the same;
- a file that is not UTF-8 text, an id holding a path separator, whitespace or an image extension
  is refused with one line naming the list and the line number (mmseg would otherwise look for
  `JPEGImages/<that text>.jpg` and fail later, far from the cause).
"""

from __future__ import annotations

import re
from pathlib import Path

from vocseg.errors import VocsegError

LIST_HINT = "Fix the list: one image id per line, as in VOC's ImageSets/Segmentation/val.txt (e.g. 2007_000033)."
_EXTENSION = re.compile(r"\.(jpe?g|png)$", re.IGNORECASE)


def parse_id_lines(data: bytes, source: str) -> list[str]:
    """The ids in the bytes of a list file; `source` names it in errors. Pure (no file access)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise VocsegError(
            f"Split list {source} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}).",
            "Save it as plain UTF-8 text with one image id per line.",
        ) from None
    ids: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        image_id = raw.strip()
        if not image_id:
            continue
        if "/" in image_id or "\\" in image_id or image_id in (".", ".."):
            raise VocsegError(f"Line {number} of split list {source} holds a path ({image_id!r}), not an image id.", LIST_HINT)
        if any(ch.isspace() for ch in image_id) or "\x00" in image_id:
            raise VocsegError(f"Line {number} of split list {source} holds more than an id ({image_id!r}).", LIST_HINT)
        if _EXTENSION.search(image_id):
            raise VocsegError(
                f"Line {number} of split list {source} names a file ({image_id!r}), not an image id.",
                f"Write the id without its extension ({_EXTENSION.sub('', image_id)!r}).",
            )
        ids.append(image_id)
    return ids


def read_id_list(path: Path) -> list[str]:
    """The ids of a split list file, in file order (duplicates kept: the caller decides).

    Raises VocsegError (one line naming the list, and the line number where it applies) for a
    missing or unreadable file, non-UTF-8 text or a line that is not an id. An empty list is
    returned as []: callers say why that matters to them.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise VocsegError(f"Split list {path} does not exist.", "Pass an existing list, or run `vocseg prepare` for this data root.") from None
    except IsADirectoryError:
        raise VocsegError(f"Split list {path} is a folder, not a file.", "Pass a text file with one image id per line.") from None
    except OSError as exc:
        raise VocsegError(f"Cannot read split list {path}: {exc.strerror or exc}.", "Check the file and its permissions.") from None
    return parse_id_lines(data, str(path))
