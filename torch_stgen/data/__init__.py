"""torch_stgen.data."""
