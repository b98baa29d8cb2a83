"""torch_stgen.nn."""
from .st_point import STPointAttention, STPointEmbedding, STPointFormer, stack_subregions  # noqa: F401
from .times import InceptionBlock, TimesBlock, TPatternNet  # noqa: F401
