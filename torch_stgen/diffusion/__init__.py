"""torch_stgen.diffusion."""
