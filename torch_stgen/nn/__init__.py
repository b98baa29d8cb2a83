"""torch_stgen.nn."""
