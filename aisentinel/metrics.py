"""What a stage needs to report its own metrics; :mod:`aisentinel.exporter` composes them.

Every source, detector and the pipeline has a ``collect()`` (the client_python
custom-collector method) that builds its metric families at scrape time from the
counters it already keeps. A stage yields families with its own samples only; the
exporter merges families of the same name from every stage into one. Families of
one name must agree on their type and help text, so each is defined next to the
state it reads. Labels are bounded (source, detector, ...): never an address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class Collecting(Protocol):
    """Anything that reports metric families at scrape time."""

    def collect(self) -> Iterable[Metric]:
        """The families, built now; may raise (the exporter contains it)."""
        ...


def counter(
    name: str, documentation: str, labels: Mapping[str, str], value: float
) -> CounterMetricFamily:
    """A counter family with one sample (``name`` without ``_total``)."""
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def gauge(
    name: str, documentation: str, labels: Mapping[str, str], value: float
) -> GaugeMetricFamily:
    """A gauge family with one sample."""
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family
