"""Data: registered datasets (sources), their cached pools and splits (pool), and a run's
batches on its device (device)."""
from .device import Data, build, crop_at, pools
from .pool import DataError, Pool, cache_dir, split, stratified_take

__all__ = ["Data", "DataError", "Pool", "build", "cache_dir", "crop_at", "pools", "split", "stratified_take"]
