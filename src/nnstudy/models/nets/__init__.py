"""The torch layers of nnstudy's own models; nnstudy.models declares each (name, parameters,
docstring) without importing torch, so that planning a study does not load it."""
