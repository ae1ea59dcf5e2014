"""aisentinel: security daemon for self-hosted AI inference servers.

Data flow: sources -> parsers -> detectors -> decisions -> responders, with the
exporter, audit, scheduler and systemd glue beside them (see ARCHITECTURE.md).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
