"""Data: registered datasets (sources), their cached pools and splits (pool), and a run's
batches on its device (device)."""
from .device import Data, build, pools, random_crop
from .pool import DataError, Pool, cache_dir, split, stratified_take

__all__ = ["Data", "DataError", "Pool", "build", "cache_dir", "pools", "random_crop", "split", "stratified_take"]
