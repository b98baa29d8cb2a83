"""torch_stgen.data: grids and sensor networks as PyG graphs, sparse patterns, scalers,
windowed datasets, urban knowledge graphs, readers of real formats and the synthetic city.

Conventions: spatio-temporal tensors are ``[B, T, N, F]``; a grid of ``H x W`` cells is
``N = H*W`` nodes in row-major order; ``mask`` = observed (1) / missing (0), with missing
values zeroed; NaN in data becomes missing."""
from .series import GridSeries, GraphSeries  # noqa: F401
from .grid import (grid_graph, grid_to_image, image_to_grid, coarsen,  # noqa: F401
                   coarsen_nodes, grid_cluster, upsample, mass_project)
from .sensor import sensor_graph, haversine_distances  # noqa: F401
from .patterns import SparsePattern  # noqa: F401
from .scalers import StandardScaler, MinMaxScaler  # noqa: F401
from .datasets import (chronological_split, time_features, WindowDataset,  # noqa: F401
                       DailyDataset, split_nodes_by_latitude)
from .readers import (read_deepst_h5, read_dcrnn, read_urbanfm, read_npz,  # noqa: F401
                      write_npz)
from .kg import (UrbanKG, UrbanRegions, kg_from_grid, kg_from_sensor_graph,  # noqa: F401
                 read_nyc_urban_kg)
from .synthetic import SyntheticCity  # noqa: F401
