"""torch_stgen.models."""
from .baselines import (nearest_fill, DistributionalUpsampler,  # noqa: F401
                        InterpolationUpsampling, SRCNN, UrbanFM, fit_upsampler)
from .diffrecon import (DiffRecon, DiffusionC, DiffusionF, Reconstruction,  # noqa: F401
                        STPointFormerConditioner, TPatternConditioner, PositionConditioner)
from .kgdiff import KGDiff  # noqa: F401
from .kg_baselines import GlobalMeanProfile, NearestNeighbourProfile, node_profiles  # noqa: F401
