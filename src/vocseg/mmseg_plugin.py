"""Imported by configs vocseg writes (``custom_imports``): applies the stack fixes in any process,
so mmseg's own ``tools/train.py`` and ``tools/test.py`` can run vocseg configs as they are."""

from vocseg.compat import ensure_stack

ensure_stack()

import vocseg.engine  # noqa: E402,F401  (registers vocseg's loop, sampler, hooks and metric)
import vocseg.speed  # noqa: E402,F401  (mixed precision, channels_last)
