"""torch_stgen.nn: the public layers (``STPointAttention`` / ``STPointFormer``,
``TimesBlock`` / ``TPatternNet``, ``GeometryMoEConv``), the ``UNet2D`` denoiser, step /
time-feature / external embeddings, ``DelayEmbedding`` and the conditioners."""
from .st_point import (STPointAttention, STPointEmbedding, STPointFormer,  # noqa: F401
                       stack_subregions)
from .times import InceptionBlock, TimesBlock, TPatternNet  # noqa: F401
from .embeddings import (SinusoidalEmbedding, TimestepEmbedding, TimeFeatureEmbedding,  # noqa: F401
                         ExternalEmbedding)
from .delay import DelayEmbedding  # noqa: F401
from .unet import UNet2D  # noqa: F401
from .conditioners import (Conditioner, ObservedMapConditioner, ExternalConditioner,  # noqa: F401
                           ConditionerStack, ConditionalDenoiser)
from .geometry_moe import GeometryMoEConv  # noqa: F401
