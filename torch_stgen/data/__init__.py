"""torch_stgen.data."""
from .kg import (UrbanKG, UrbanRegions, kg_from_grid, kg_from_sensor_graph,  # noqa: F401
                 read_nyc_urban_kg)
