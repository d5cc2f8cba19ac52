"""nnstudy: seeded neural-network studies with honest statistics."""
__version__ = "0.1.0"
