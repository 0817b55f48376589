"""One way from a config group to its dataclass: typed, range-checked, errors naming the key.

Beyond the paper (DESIGN.md, "config groups named like the code"): every config group is backed
by a dataclass of the module that uses it.  :func:`to_dataclass` fills one from a group (a
``DictConfig``, a mapping, an instance or ``None``) through OmegaConf's structured merge, so an
unknown key or a value of the wrong type fails at once naming ``group.key``, then runs the
dataclass's own range checks (``__post_init__`` and, where it has one, ``validate()``).  Plain
Python (OmegaConf only), so the lowest layers can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config group with an unknown key, a value of the wrong type or out of range."""


def to_plain(cfg: Any) -> dict[str, Any]:
    """A config group as a plain dict (resolved); ``None`` is the empty dict."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg or {})


def _key(name: str, key: Any) -> str:
    return ".".join(str(k) for k in (name, key) if k not in (None, ""))


def to_dataclass(schema: type[T], group: Any, name: str = "") -> T:
    """The dataclass ``schema`` filled from the config group ``group`` and checked.

    ``name`` is the group's place in the run configuration (``"train"``, ``"retrain.train"``):
    an unknown key or a wrong type is a :class:`ConfigError` naming the key under it, e.g.
    ``retrain.train.epohcs: Key 'epohcs' not in 'TrainConfig'``.  A range check's own error
    (a ``ValueError``, such as a ``DataError``) passes unchanged when it names ``name``, else it
    becomes a :class:`ConfigError` prefixed by it.  An instance of ``schema`` is checked as it is.
    """
    try:
        if isinstance(group, schema):
            out = group
        elif group is None or isinstance(group, DictConfig | Mapping):
            merged = OmegaConf.merge(OmegaConf.structured(schema), to_plain(group))
            out = OmegaConf.to_object(merged)  # runs __post_init__
        else:
            raise ConfigError(f"{name or schema.__name__} must be a mapping, got {group!r}")
        validate = getattr(out, "validate", None)
        if validate is not None:
            validate()
    except OmegaConfBaseException as e:
        msg = str(getattr(e, "msg", e)).splitlines()[0]
        raise ConfigError(f"{_key(name, getattr(e, 'full_key', ''))}: {msg}") from None
    except ValueError as e:  # a range check of the dataclass: kept if it names the key already
        if not name or name in str(e):
            raise
        raise ConfigError(f"{name}: {e}") from e
    return out  # type: ignore[return-value]
