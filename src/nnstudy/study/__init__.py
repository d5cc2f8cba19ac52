"""A study file (composed: extends, budgets) -> the run table (plan), the choices made on validation data (selection), the
labelled data of every run (collect)."""
from .collect import collect, labelled
from .compose import compose, read_study
from .plan import Row, Study, fmt, is_placeholder, materialise, natural_key, needs
from .selection import load_selections, select

__all__ = ["Row", "Study", "collect", "compose", "fmt", "is_placeholder", "labelled", "load_selections", "materialise",
           "natural_key", "needs", "read_study", "select"]
