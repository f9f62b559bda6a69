"""MMEngine data elements (`SegDataSample`, `PixelData`) filled without deep copies of their metadata.

Imported by `vocseg.data.transforms` and `vocseg.data.batches`, never at `vocseg --help`.

`BaseDataElement.set_metainfo` deep-copies the whole dict it is given, and `.to(device)` (which
MMEngine's `cast_data` calls for every sample of every batch, also from CPU to CPU) makes a new
element through it: a recursive `copy.deepcopy` of paths, shapes and flags per sample and per
label map, ~30 us each (issue 22). A deep copy of an immutable value (a str, number, bool, None,
or a tuple of those, `torch.Size` included) is that value, so these set such values as they are
and deep-copy only the rest: the same fields, the same values, the same element types.
"""

from __future__ import annotations

import copy
from typing import Any

_IMMUTABLE = (str, bytes, int, float, bool, complex, type(None))
_SCALARS = frozenset(_IMMUTABLE)


def is_immutable(value: Any) -> bool:
    """True for a str, bytes, number, bool, None, or a tuple (incl. torch.Size) of only those."""
    if type(value) in _SCALARS or isinstance(value, _IMMUTABLE):
        return True
    return isinstance(value, tuple) and all(type(v) in _SCALARS or is_immutable(v) for v in value)


def set_metainfo(element: Any, metainfo: dict) -> None:
    """`element.set_metainfo(metainfo)` without deep-copying immutable values (module docstring)."""
    for name, value in metainfo.items():
        element.set_field(name=name, value=value if is_immutable(value) else copy.deepcopy(value), field_type="metainfo", dtype=None)


def fresh_copy(element: Any) -> Any:
    """What `element.to("cpu")` gives for an element whose tensors are on the CPU: a new element
    of the same type, the same metadata, new nested elements, the same tensors (not copied).
    Mutating the copy (a padded label map, new metadata) leaves `element` as it was."""
    from mmengine.structures import BaseDataElement

    new = type(element)()
    set_metainfo(new, dict(element.metainfo_items()))
    for name, value in element.items():
        setattr(new, name, fresh_copy(value) if isinstance(value, BaseDataElement) else value)
    return new
