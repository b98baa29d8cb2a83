"""torch_stgen.kg."""
