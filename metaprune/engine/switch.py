"""On/off options: one reading of a bool-or-string setting for configs and the environment.

Infrastructure, not part of MetaPruning (Liu et al., ICCV 2019).  A Hydra field (``train.amp``,
``train.channels_last``) and an environment variable (``METAPRUNE_KEEP_HEAP``) accept the same
words, and any other word is a ``ValueError`` naming the option.
"""

from __future__ import annotations

from typing import Any

_OFF = {"false", "off", "no", "none", "0", ""}
_ON = {"true", "on", "yes", "1"}


def switch(value: Any, name: str, extra: tuple[str, ...] = ()) -> str:
    """Normalise a bool-or-string option to ``"auto"``, ``"on"``, ``"off"`` or one of ``extra``."""
    s = str(value).strip().lower()
    if s in _OFF:
        return "off"
    if s in _ON:
        return "on"
    if s == "auto" or s in extra:
        return s
    raise ValueError(f"{name} must be auto, true, false or one of {list(extra)}; got {value!r}")
