"""Log sources: they read lines and hand them on as :class:`~aisentinel.events.LineBatch`
(or typed events as :class:`~aisentinel.events.EventBatch`).

Plug-ins (each registers itself in ``REGISTRY``): ``file`` (:mod:`.file`),
``journald`` (:mod:`.journald`, needs the optional ``systemd-python``) and ``nvml``
(:mod:`.nvml`, GPU samples through ``nvidia-ml-py``).
"""

from aisentinel.sources import file, journald, nvml
from aisentinel.sources.base import REGISTRY, Emit, Source, SourceConfigBase, SourceStats

__all__ = [
    "REGISTRY",
    "Emit",
    "Source",
    "SourceConfigBase",
    "SourceStats",
    "file",
    "journald",
    "nvml",
]
