"""Data: registered datasets (sources), their cached pools and splits (pool), and a run's
batches on its device (device). The package and its declarations (sources) import no torch, so
that planning a study does not load it; pool and device do."""


class DataError(RuntimeError):
    """Data missing or malformed; the message names where it looked and what to change."""
