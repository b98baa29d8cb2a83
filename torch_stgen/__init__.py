"""torch-stgen: spatio-temporal generative modelling with diffusion for PyTorch Geometric.

Sub-packages:

* :mod:`torch_stgen.data` - grids and road networks as PyG graphs, sparse patterns,
  scalers, windowed datasets, urban knowledge graphs, readers and the synthetic city.
* :mod:`torch_stgen.nn` - the public layers (``STPointAttention``, ``TimesBlock``,
  ``GeometryMoEConv``), the U-Net denoiser, embeddings and conditioners.
* :mod:`torch_stgen.diffusion` - schedules, DDPM / DDIM, EDM and ``MetaPatternDiffusion``.
* :mod:`torch_stgen.kg` - TuckER pre-training with PyKEEN.
* :mod:`torch_stgen.metrics` - MAE, RMSE, MMD, JSD, CRPS.
* :mod:`torch_stgen.models` - DiffRecon, KGDiff and their baselines.
* :mod:`torch_stgen.train` - training utilities (EMA of the weights, resumable
  checkpoints, data-parallel training under ``torchrun``).
* :mod:`torch_stgen.viz` - reconstruction maps and real-vs-generated profiles (matplotlib,
  optional).
"""
__version__ = "0.1.0"

from . import typing  # noqa: F401
from . import data, diffusion, kg, metrics, models, nn, train, viz  # noqa: F401
