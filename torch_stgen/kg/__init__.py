"""torch_stgen.kg: knowledge-graph embedding pre-training.

* :func:`pretrain_tucker` - TuckER embeddings of an ``UrbanKG`` with PyKEEN (cached on disk).
* :class:`TuckerEmbeddings` - the result: entity / relation tensors aligned with the KG ids.
* :func:`link_prediction_mrr` - filtered / raw MRR and Hits@k on held-out triples.

PyKEEN (the ``kg`` extra) is imported lazily, only when these functions run.
"""
from .tucker import TuckerEmbeddings, default_cache_dir, link_prediction_mrr, pretrain_tucker

__all__ = ["TuckerEmbeddings", "pretrain_tucker", "link_prediction_mrr", "default_cache_dir"]
