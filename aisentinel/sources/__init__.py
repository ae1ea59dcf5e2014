"""Log sources: they read lines and hand them on as :class:`~aisentinel.events.LineBatch`.

Plug-ins (each registers itself in ``REGISTRY``): ``file`` (:mod:`.file`) and
``journald`` (:mod:`.journald`, needs the optional ``systemd-python``).
"""

from aisentinel.sources import file, journald
from aisentinel.sources.base import REGISTRY, Emit, Source, SourceConfigBase, SourceStats

__all__ = ["REGISTRY", "Emit", "Source", "SourceConfigBase", "SourceStats", "file", "journald"]
