"""torch_stgen.models."""
