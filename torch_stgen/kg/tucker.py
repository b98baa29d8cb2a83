"""TuckER knowledge-graph pre-training with PyKEEN, an on-disk cache, and link-prediction MRR.

KGDiff (Wang et al., AAAI 2026, "Knowledge Graph Guided Heterogeneity-Informed Diffusion
Model for Spatio-Temporal Generation") pre-trains TuckER embeddings of the urban knowledge
graph with PyKEEN and refines them with a Geometry MoE (:class:`torch_stgen.nn.GeometryMoEConv`).

TuckER (Balažević, Allen, Hospedales, "TuckER: Tensor Factorization for Knowledge Graph
Completion", EMNLP 2019, https://arxiv.org/abs/1901.09590) scores a triple (h, r, t) with a
Tucker decomposition of the binary tensor of true triples:

.. math::
    \\phi(h, r, t) = \\mathcal{W} \\times_1 \\mathbf{e}_h \\times_2 \\mathbf{w}_r
    \\times_3 \\mathbf{e}_t, \\qquad \\mathcal{W} \\in \\mathbb{R}^{d \\times d_r \\times d}

We use PyKEEN's model and training-loop API (``pykeen.models.TuckER`` with
``SLCWATrainingLoop`` / ``LCWATrainingLoop``), not ``pipeline()``, whose forced final
evaluation is slow. PyKEEN is an optional dependency (the ``kg`` extra), imported lazily.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import numbers
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int
from ..typing import require

__all__ = ["TuckerEmbeddings", "pretrain_tucker", "link_prediction_mrr", "default_cache_dir"]

logger = logging.getLogger(__name__)

#: Version of the cache layout; bump when the stored content changes meaning.
_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """The TuckER cache folder: ``$TORCH_STGEN_CACHE/tucker`` if the environment variable
    is set, else ``~/.cache/torch_stgen/tucker``."""
    root = os.environ.get("TORCH_STGEN_CACHE")
    if root:
        return Path(root).expanduser() / "tucker"
    return Path("~/.cache/torch_stgen/tucker").expanduser()


@dataclass
class TuckerEmbeddings:
    """Pre-trained TuckER embeddings aligned with the knowledge graph's ids.

    Row ``i`` of :attr:`entity` is entity ``i`` of the KG (``kg.entities[i]``), row ``j`` of
    :attr:`relation` is relation ``j`` (``kg.relations[j]``): the triples are handed to
    PyKEEN already mapped, so PyKEEN's ids are the KG's ids.

    Attributes:
        entity (Tensor): entity embeddings ``[num_entities, dim]`` (float32, CPU).
        relation (Tensor): relation embeddings ``[num_relations, relation_dim]``.
        settings (dict): the training settings (dim, relation_dim, epochs, seed, batch_size,
            num_negs, lr, loop) plus ``fingerprint`` of the KG and the PyKEEN version.
        losses (list of float): the mean training loss of every epoch.
        model_state (dict): the full PyKEEN ``TuckER`` state dict (core tensor and batch
            norms included), so :meth:`to_pykeen_model` can score triples.
        from_cache (bool): ``True`` if this object was read from the cache without training.
    """
    entity: Tensor
    relation: Tensor
    settings: Dict[str, Any]
    losses: List[float] = field(default_factory=list)
    model_state: Optional[Dict[str, Tensor]] = None
    from_cache: bool = False

    @property
    def num_entities(self) -> int:
        return self.entity.size(0)

    @property
    def num_relations(self) -> int:
        return self.relation.size(0)

    def to_pykeen_model(self, device: Union[str, torch.device] = "cpu"):
        """Rebuild the trained PyKEEN ``TuckER`` model (in eval mode) from :attr:`model_state`."""
        if self.model_state is None:
            raise ValueError("these TuckerEmbeddings carry no 'model_state'; cannot rebuild "
                             "the PyKEEN model")
        # building draws initial weights (then overwritten): not from the caller's RNG
        # (_build_model itself seeds nothing)
        with torch.random.fork_rng(devices=[]):
            model = _build_model(self.num_entities, self.num_relations, self.settings)
        model.load_state_dict(self.model_state)
        return model.to(device).eval()

    def __repr__(self) -> str:
        s = self.settings
        return (f"{self.__class__.__name__}(num_entities={self.num_entities}, "
                f"num_relations={self.num_relations}, dim={s.get('dim')}, "
                f"relation_dim={s.get('relation_dim')}, loop={s.get('loop')!r}, "
                f"epochs={s.get('epochs')}, from_cache={self.from_cache})")


# ---------------------------------------------------------------------------------------
# input handling
# ---------------------------------------------------------------------------------------

def _check_triples(triples: Any, name: str, num_entities: Optional[int] = None,
                   num_relations: Optional[int] = None) -> Tensor:
    if not isinstance(triples, Tensor):
        raise TypeError(f"'{name}' must be a LongTensor of shape [M, 3] (head, relation, tail) "
                        f"(got {type(triples).__name__})")
    if triples.dim() != 2 or triples.size(1) != 3:
        raise ValueError(f"'{name}' must have shape [M, 3] (head, relation, tail) "
                         f"(got {tuple(triples.shape)})")
    if triples.dtype.is_floating_point or triples.dtype == torch.bool or triples.is_complex():
        raise TypeError(f"'{name}' must be an integer tensor (got dtype {triples.dtype})")
    triples = triples.long().cpu()
    if triples.numel() and triples.min() < 0:
        raise ValueError(f"'{name}' holds negative ids")
    if num_entities is not None and triples.numel():
        hi = int(torch.maximum(triples[:, 0], triples[:, 2]).max())
        if hi >= num_entities:
            raise ValueError(f"'{name}' holds entity id {hi} >= num_entities={num_entities}")
    if num_relations is not None and triples.numel():
        hi = int(triples[:, 1].max())
        if hi >= num_relations:
            raise ValueError(f"'{name}' holds relation id {hi} >= num_relations={num_relations}")
    return triples


def _resolve_kg(kg: Any, num_entities: Optional[int], num_relations: Optional[int]):
    """Return ``(triples [M, 3], num_entities, num_relations, entity_names, relation_names,
    fingerprint)`` from an ``UrbanKG`` (duck-typed) or a raw triples tensor."""
    if isinstance(kg, Tensor):
        if num_entities is None or num_relations is None:
            raise ValueError("'num_entities' and 'num_relations' are required when 'kg' is a "
                             "raw triples tensor")
        if num_entities < 1 or num_relations < 1:
            raise ValueError(f"'num_entities' and 'num_relations' must be >= 1 (got "
                             f"{num_entities}, {num_relations})")
        triples = _check_triples(kg, "kg", num_entities, num_relations)
        h = hashlib.sha256()
        h.update(f"triples:{num_entities}:{num_relations}:".encode())
        h.update(triples.numpy().astype("<i8").tobytes())
        return triples, int(num_entities), int(num_relations), None, None, h.hexdigest()
    for attr in ("triples", "num_entities", "num_relations", "fingerprint"):
        if not hasattr(kg, attr):
            raise TypeError(f"'kg' must be an UrbanKG (with .triples, .num_entities, "
                            f".num_relations, .fingerprint()) or a LongTensor [M, 3] "
                            f"(got {type(kg).__name__} without '.{attr}')")
    n_e, n_r = int(kg.num_entities), int(kg.num_relations)
    if n_e < 1 or n_r < 1:
        raise ValueError(f"'kg' has no {'entities' if n_e < 1 else 'relations'} "
                         f"(num_entities={n_e}, num_relations={n_r})")
    if num_entities is not None and num_entities != n_e:
        raise ValueError(f"'num_entities'={num_entities} disagrees with kg.num_entities={n_e}")
    if num_relations is not None and num_relations != n_r:
        raise ValueError(f"'num_relations'={num_relations} disagrees with "
                         f"kg.num_relations={n_r}")
    triples = _check_triples(kg.triples, "kg.triples", n_e, n_r)
    fp = kg.fingerprint
    fp = fp() if callable(fp) else fp
    entities = list(getattr(kg, "entities", None) or []) or None
    relations = list(getattr(kg, "relations", None) or []) or None
    return triples, n_e, n_r, entities, relations, str(fp)


def _triples_factory(triples: Tensor, num_entities: int, num_relations: int,
                     entities: Optional[Sequence[str]] = None,
                     relations: Optional[Sequence[str]] = None):
    """A PyKEEN ``TriplesFactory`` over already-mapped triples, with PyKEEN id == KG id."""
    require("pykeen")
    from pykeen.triples import TriplesFactory
    if entities is None or len(entities) != num_entities:
        entities = [str(i) for i in range(num_entities)]
    if relations is None or len(relations) != num_relations:
        relations = [str(j) for j in range(num_relations)]
    return TriplesFactory(mapped_triples=triples,
                          entity_to_id={e: i for i, e in enumerate(entities)},
                          relation_to_id={r: j for j, r in enumerate(relations)},
                          num_entities=num_entities, num_relations=num_relations)


_FAST_TUCKER = None


def _fast_tucker_class():
    r"""PyKEEN's ``TuckER`` with a 1-N ``score_t`` in O(b d^2 d_r + b N d).

    PyKEEN scores (h, r, *) by broadcasting the whole interaction over every candidate tail,
    O(b N d^2 d_r): the LCWA loop then takes ~7 minutes per epoch on the NYC KG at d = 32.
    The TuckER score is linear in the tail, :math:`s = \langle z(h, r), e_t \rangle` with
    :math:`z = \mathrm{DO}(\mathrm{BN}(\mathrm{DO}(\mathrm{BN}(e_h)) \times_1
    \mathrm{DO}(\mathcal{W} \times_2 w_r)))`, so we compute z once per query and take one
    matrix product with the entity table. Dropout masks and batch-norm statistics act on
    the same tensors (same shapes, same order) as in PyKEEN, so training is unchanged.
    """
    global _FAST_TUCKER
    if _FAST_TUCKER is None:
        from pykeen.models import TuckER
        from pykeen.nn.utils import apply_optional_bn

        class FastTuckER(TuckER):
            def score_t(self, hr_batch, *, slice_size=None, mode=None, tails=None):
                if tails is not None or mode is not None:
                    return super().score_t(hr_batch, slice_size=slice_size, mode=mode,
                                           tails=tails)
                inter = self.interaction
                h = self.entity_representations[0](indices=hr_batch[:, 0])
                r = self.relation_representations[0](indices=hr_batch[:, 1])
                t = self.entity_representations[0](indices=None)
                h = inter.head_dropout(apply_optional_bn(x=h, batch_norm=inter.head_batch_norm))
                w = inter.relation_dropout(torch.einsum("ijk,bj->bik", inter.core_tensor, r))
                z = torch.einsum("bik,bi->bk", w, h)
                z = inter.head_relation_dropout(
                    apply_optional_bn(x=z, batch_norm=inter.head_relation_batch_norm))
                return z @ t.t()

        _FAST_TUCKER = FastTuckER
    return _FAST_TUCKER


def _build_model(num_entities: int, num_relations: int, settings: Dict[str, Any],
                 triples: Optional[Tensor] = None):
    require("pykeen")
    from pykeen.triples import CoreTriplesFactory
    if triples is None:  # only the sizes matter to build the model
        triples = torch.zeros(0, 3, dtype=torch.long)
    from pykeen.utils import NoRandomSeedNecessary
    tf = CoreTriplesFactory(mapped_triples=triples, num_entities=num_entities,
                            num_relations=num_relations)
    # PyKEEN's own ``random_seed`` calls ``torch.manual_seed``: it would reseed the
    # caller's python / numpy / torch RNGs (every CUDA device included) when a trained
    # model is rebuilt, and every CUDA device at training time. The training path seeds
    # the same three generators in ``_isolated_rng`` instead, so the weights are the same.
    return _fast_tucker_class()(triples_factory=tf, embedding_dim=settings["dim"],
                                relation_dim=settings["relation_dim"],
                                random_seed=NoRandomSeedNecessary)


@contextlib.contextmanager
def _isolated_rng(seed: int, device: Optional[torch.device] = None):
    """Seed python, numpy, torch's CPU generator and, when ``device`` is a CUDA device, that
    device's generator for the block; restore every one of them after. No other
    generator is touched (``torch.manual_seed`` would reseed every CUDA device, and
    ``fork_rng`` would restore none of them)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = device is not None and device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()
             ) if cuda else None
    with torch.random.fork_rng(devices=[index] if cuda else []):
        random.seed(seed)
        np.random.seed(seed)
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _resolve_torch_device(device: Any) -> torch.device:
    """``device`` as a ``torch.device`` (``None``: the CPU), with a ``ValueError`` naming
    the argument."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        if isinstance(device, int) and not isinstance(device, bool):   # an accelerator index
            raise ValueError(f"'device' {device}: no accelerator here ({err})") from None
        raise ValueError(f"'device' must be 'cpu', 'cuda', 'cuda:N' or a torch.device "
                         f"(got {device!r})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"'device' {device}: CUDA is not available in this PyTorch build or "
                         f"on this machine")
    return dev


def _device_settings(device: torch.device) -> Dict[str, Any]:
    """The cache-key entries of the training device: none on the CPU (keys of CPU runs are
    those of earlier versions), else the device type and the TF32 matmul switch. Dropout
    masks come from the device's own generator (CUDA's Philox, not the CPU's Mersenne
    Twister) and reductions run in another order, so embeddings trained on a GPU are not
    the CPU ones; the device index does not change them."""
    if device.type == "cpu":
        return {}
    out: Dict[str, Any] = {"device": device.type}
    out["tf32"] = bool(device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)
    return out


def _prepare_cache_dir(folder: Path) -> None:
    """Create the cache folder (before training, so that a bad ``cache_dir`` cannot lose a
    finished training) and check that it is a writable directory."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"'cache_dir' {str(folder)!r} is not a directory (a file is in the "
                         f"way); pass another folder or cache_dir=False") from None
    except OSError as err:
        raise ValueError(f"'cache_dir' {str(folder)!r} cannot be created ({err.strerror}); "
                         f"pass another folder or cache_dir=False") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"'cache_dir' {str(folder)!r} is not a writable directory; pass "
                         f"another folder or cache_dir=False")


def _num_instances(triples: Tensor, loop: str) -> int:
    """Training instances of a PyKEEN loop: triples (sLCWA) or distinct (head, relation)
    pairs (LCWA, 1-N over the tails)."""
    if loop == "lcwa":
        return int(torch.unique(triples[:, :2], dim=0).size(0))
    return int(triples.size(0))


def _cache_key(fingerprint: str, settings: Dict[str, Any]) -> str:
    payload = json.dumps({"fingerprint": fingerprint, "cache_version": _CACHE_VERSION,
                          **settings}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------

def pretrain_tucker(kg: Any, dim: int = 64, epochs: int = 8, seed: int = 0,
                    batch_size: int = 1024, num_negs: int = 4, lr: float = 0.02,
                    loop: str = "slcwa", relation_dim: Optional[int] = None,
                    cache_dir: Union[str, Path, None, bool] = None, progress: bool = True,
                    device: Union[str, torch.device] = "cpu", *,
                    num_entities: Optional[int] = None,
                    num_relations: Optional[int] = None,
                    callbacks: Optional[Sequence[Any]] = None) -> TuckerEmbeddings:
    r"""Pre-train TuckER embeddings of a knowledge graph with PyKEEN (KGDiff §"Urban KG").

    The KG triples are given to PyKEEN already mapped (``TriplesFactory(mapped_triples=...)``),
    so the returned embedding rows are aligned with the KG's entity / relation ids.
    Training is deterministic for a given ``seed`` on CPU (python, numpy and torch RNGs are
    seeded inside an isolated RNG context; the caller's RNG state is left untouched) and
    cached on disk under a key made of ``kg.fingerprint()`` and every training setting: a
    second call with the same KG and settings reads the cache without training
    (``result.from_cache is True``). Off the CPU the key also holds the device type (and,
    on CUDA, the TF32 matmul switch), because a GPU draws other dropout masks and sums in
    another order: its embeddings are not the CPU ones. The cache folder is created (and
    checked) before training; if the file cannot be written after all, a warning is
    logged and the trained embeddings are returned.

    The defaults (sLCWA, d = 64, 4 negatives per positive, Adam lr 0.02, 8 epochs, batch
    1024) were chosen with ``benchmarks/tucker.py`` on the NYC urban KG (67,418 triples,
    26,604 entities): the best held-out filtered MRR we measured within the time budget
    (0.035, Hits@10 0.14, against 0.0005 for the untrained model), with 540 s of training
    on a 2-core CPU that other jobs kept at load 5-7 (an idle CPU should need roughly half:
    sLCWA d = 32 took 10.3 s/epoch there against 5 s/epoch idle); see
    ``benchmarks/results/tucker.md``. On a busy CPU, ``torch.set_num_threads(1)`` is
    several times faster than two threads (OpenMP barriers stall). The KGDiff paper uses
    d = 128.

    .. math::
        \phi(h, r, t) = \mathcal{W} \times_1 \mathbf{e}_h \times_2 \mathbf{w}_r
        \times_3 \mathbf{e}_t

    Args:
        kg: an ``UrbanKG`` (``triples`` [M, 3], ``num_entities``, ``num_relations``,
            ``fingerprint()``, optionally ``entities`` / ``relations`` names) or a raw
            LongTensor ``[M, 3]`` of (head, relation, tail) ids, in which case
            ``num_entities`` and ``num_relations`` are required.
        dim (int): entity embedding size d. (default: ``64``)
        epochs (int): training epochs; ``0`` returns the (seeded) untrained model, a random
            baseline. (default: ``8``)
        seed (int): random seed in ``[0, 2**32)``. (default: ``0``)
        batch_size (int): positives per batch, at most the number of triples (PyKEEN
            drops the last partial batch of every epoch because of TuckER's batch norms,
            which also need batches of at least 2, so training needs ``batch_size >= 2``
            and a KG of at least 2 triples and 2 entities). (default: ``1024``)
        num_negs (int): negatives per positive for ``loop='slcwa'`` (ignored for LCWA).
            (default: ``4``)
        lr (float): Adam learning rate. (default: ``0.02``)
        loop (str): ``'slcwa'`` (stochastic local closed world, negative sampling; fast) or
            ``'lcwa'`` (1-N: scores all tails per (h, r), with our O(N d) tail scoring;
            still ~10-25x slower per epoch than sLCWA on the NYC KG).
            (default: ``'slcwa'``)
        relation_dim (int, optional): relation embedding size d_r; ``None`` means ``dim``
            (needed to feed the relations to :class:`~torch_stgen.nn.GeometryMoEConv`).
        cache_dir (str or Path, optional): cache folder; ``None`` uses
            ``$TORCH_STGEN_CACHE/tucker`` or ``~/.cache/torch_stgen/tucker`` (if that is
            not writable, a warning and no cache); ``False`` disables caching. A folder
            given here that is not writable raises before training.
        progress (bool): show PyKEEN's tqdm progress bar over epochs. (default: ``True``)
        device (str or torch.device): where to train (``None``: the CPU); part of the
            cache key off the CPU.
            (default: ``'cpu'``)
        num_entities (int, optional): entity count when ``kg`` is a tensor.
        num_relations (int, optional): relation count when ``kg`` is a tensor.
        callbacks (list, optional): PyKEEN ``TrainingCallback`` objects forwarded to the
            training loop (e.g. per-epoch evaluation in ``benchmarks/tucker.py``). A call
            with callbacks neither reads nor writes the cache: a callback can change the
            training (gradient clipping, early stopping), and a hit would skip it.

    Returns:
        :class:`TuckerEmbeddings` with ``entity`` [num_entities, dim] and ``relation``
        [num_relations, relation_dim] on the CPU.

    Raises:
        ImportError: if PyKEEN is not installed (names the ``kg`` extra).
        ValueError: for a bad argument (named), a KG too small to train on, or a
            ``cache_dir`` that is not a writable folder (checked before training).
    """
    require("pykeen", "TuckER knowledge-graph pre-training (torch_stgen.kg.pretrain_tucker)")
    # any integer type (numpy's too, e.g. sizes read from a config array), as plain ints
    dim, epochs, batch_size, num_negs = (
        check_int(name, value, lo, low_text="") for name, value, lo in (
            ("dim", dim, 1), ("epochs", epochs, 0), ("batch_size", batch_size, 1),
            ("num_negs", num_negs, 1)))
    if relation_dim is None:
        relation_dim = dim
    try:
        relation_dim = check_int("relation_dim", relation_dim, 1, low_text="")
    except ValueError:
        raise ValueError(f"'relation_dim' must be an integer >= 1 or None "
                         f"(got {relation_dim!r})") from None
    if not (isinstance(lr, (int, float)) and lr > 0 and np.isfinite(lr)):
        raise ValueError(f"'lr' must be a positive finite float (got {lr!r})")
    loop = str(loop).lower()
    if loop not in ("slcwa", "lcwa"):
        raise ValueError(f"'loop' must be 'slcwa' or 'lcwa' (got {loop!r})")
    # numpy's seed range (np.random.seed refuses others with an unnamed error)
    if (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)
            or not 0 <= seed < 2 ** 32):
        raise ValueError(f"'seed' must be an integer in [0, 2**32) (got {seed!r})")
    seed = int(seed)
    dev = _resolve_torch_device(device)

    triples, n_e, n_r, entities, relations, fingerprint = _resolve_kg(kg, num_entities,
                                                                       num_relations)
    if triples.size(0) == 0 and epochs > 0:
        raise ValueError("'kg' has no triples to train on")
    if epochs > 0:
        # TuckER's batch norms cannot train on a batch of one (PyKEEN refuses it, naming a
        # batch_size the caller did not pass when the KG is smaller than the batch), and
        # negative sampling / ranking need a second entity
        if n_e < 2:
            raise ValueError(f"'kg' has {n_e} entity: TuckER training needs at least 2 "
                             f"entities (negative samples replace a head or tail by "
                             f"another entity); use epochs=0 for the untrained model")
        if batch_size < 2:
            raise ValueError(f"'batch_size' must be >= 2 to train (got {batch_size}): "
                             f"TuckER's batch norm cannot train on single-triple batches")
        if triples.size(0) < 2:
            raise ValueError(f"'kg' has 1 triple: TuckER's batch norm needs batches of at "
                             f"least 2 triples (the batch is capped at the number of "
                             f"triples, whatever 'batch_size'={batch_size}); use epochs=0 "
                             f"for the untrained model")
        if loop == "lcwa" and _num_instances(triples, loop) < 2:
            raise ValueError("'kg' has a single (head, relation) pair: loop='lcwa' trains on "
                             "one batch row per pair and TuckER's batch norm needs at least "
                             "2; use loop='slcwa' or epochs=0")
    from pykeen.version import get_version
    settings = dict(dim=dim, relation_dim=relation_dim, epochs=epochs, seed=seed,
                    batch_size=batch_size, num_negs=num_negs if loop == "slcwa" else None,
                    lr=float(lr), loop=loop, pykeen_version=get_version(),
                    **_device_settings(dev))

    cache_path = None
    if cache_dir is not False and not callbacks:
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"'cache_dir' must be a folder path, None (the default folder) "
                            f"or False (no cache) (got {cache_dir!r})")
        folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        cache_path = folder / f"tucker-{_cache_key(fingerprint, settings)}.pt"
        if cache_path.is_file():
            try:
                blob = torch.load(cache_path, map_location="cpu", weights_only=True)
                if blob.get("fingerprint") == fingerprint and blob.get("settings") == settings:
                    logger.info("TuckER embeddings read from cache %s", cache_path)
                    return TuckerEmbeddings(entity=blob["entity"], relation=blob["relation"],
                                            settings={**settings, "fingerprint": fingerprint},
                                            losses=list(blob["losses"]),
                                            model_state=blob["model_state"], from_cache=True)
                logger.warning("ignoring cache file %s: its content does not match", cache_path)
            except Exception as err:  # corrupt / partial file: retrain and overwrite
                logger.warning("ignoring unreadable cache file %s (%s)", cache_path, err)
        # a miss: the folder must take the result, checked now rather than after training
        # (a read-only folder holding the file is fine for a hit)
        try:
            _prepare_cache_dir(folder)
        except ValueError as err:
            if cache_dir is not None:       # the caller's own folder: say so at once
                raise
            logger.warning("the default TuckER cache folder is not usable (%s); training "
                           "without a cache", err)
            cache_path = None

    tf = _triples_factory(triples, n_e, n_r, entities, relations)
    from pykeen.training import LCWATrainingLoop, SLCWATrainingLoop
    with _isolated_rng(seed, dev):
        model = _build_model(n_e, n_r, settings, triples).to(dev)
        losses: List[float] = []
        if epochs > 0:
            # no automatic memory optimisation: its trial passes cost time and are meant
            # for GPUs; batch norm makes PyKEEN drop the last partial batch, so a batch
            # larger than the KG would leave no batch at all
            optim_kwargs = dict(optimizer="adam", optimizer_kwargs=dict(lr=float(lr)),
                                automatic_memory_optimization=False)
            effective_batch = min(batch_size, _num_instances(triples, loop))
            if loop == "slcwa":
                trainer = SLCWATrainingLoop(model=model, triples_factory=tf,
                                            negative_sampler="basic",
                                            negative_sampler_kwargs=dict(num_negs_per_pos=num_negs),
                                            **optim_kwargs)
            else:
                trainer = LCWATrainingLoop(model=model, triples_factory=tf, **optim_kwargs)
            out = trainer.train(triples_factory=tf, num_epochs=epochs, batch_size=effective_batch,
                                use_tqdm=progress, use_tqdm_batch=False,
                                tqdm_kwargs=dict(desc=f"TuckER d={dim} ({loop})"),
                                pin_memory=False,
                                callbacks=list(callbacks) if callbacks else None)
            losses = [float(v) for v in (out or [])]
            if not all(np.isfinite(losses)):
                raise FloatingPointError(f"TuckER training diverged (epoch losses {losses}); "
                                         f"lower 'lr' (got {lr})")
    model.eval()
    entity = model.entity_representations[0](indices=None).detach().float().cpu().clone()
    relation = model.relation_representations[0](indices=None).detach().float().cpu().clone()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    result = TuckerEmbeddings(entity=entity, relation=relation,
                              settings={**settings, "fingerprint": fingerprint},
                              losses=losses, model_state=state, from_cache=False)
    if cache_path is not None:
        tmp = cache_path.with_suffix(f".tmp{os.getpid()}")
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(dict(fingerprint=fingerprint, settings=settings, entity=entity,
                            relation=relation, losses=losses, model_state=state), tmp)
            os.replace(tmp, cache_path)  # atomic: a reader never sees a half-written file
            logger.info("TuckER embeddings cached at %s", cache_path)
        except OSError as err:  # e.g. a full disk: keep the training, lose only the cache
            with contextlib.suppress(OSError):
                tmp.unlink()
            logger.warning("could not write the TuckER cache file %s (%s); the embeddings "
                           "are returned but not cached", cache_path, err)
    return result


def _bn_affine(bn: Optional[torch.nn.BatchNorm1d], dim: int, like: Tensor):
    """(a, c) with ``bn(x) == a * x + c`` in eval mode (identity when ``bn`` is None)."""
    if bn is None:
        return torch.ones(dim, dtype=like.dtype), torch.zeros(dim, dtype=like.dtype)
    a = torch.rsqrt(bn.running_var + bn.eps)
    c = -bn.running_mean * a
    if bn.affine:
        a, c = a * bn.weight, c * bn.weight + bn.bias
    return a.to(like.dtype), c.to(like.dtype)


class _TuckerScorer:
    r"""All-entity scores of a PyKEEN ``TuckER`` in eval mode, in O(b (d^2 d_r + N d)).

    PyKEEN's ``score_t`` / ``score_h`` broadcast the full interaction over every candidate
    (O(b N d^2 d_r), seconds per batch on the NYC KG). In eval mode (dropout off, batch
    norms affine: :math:`\mathrm{BN}(x) = a \odot x + c`) the TuckER score is

    .. math::
        s(h, r, t) = \big\langle a_2 \odot ((a_1 \odot e_h + c_1)^\top W_r) + c_2,
        \; e_t \big\rangle, \qquad W_r = \mathcal{W} \times_2 w_r,

    linear in :math:`e_t` and affine in the normalised head, so both sides reduce to one
    matrix product with the entity table.
    """

    def __init__(self, model):
        inter = model.interaction
        self.core = inter.core_tensor.detach()                          # [d, d_r, d]
        self.ent = model.entity_representations[0](indices=None).detach()
        self.rel = model.relation_representations[0](indices=None).detach()
        d = self.core.size(0)
        self.a1, self.c1 = _bn_affine(inter.head_batch_norm, d, self.ent)
        self.a2, self.c2 = _bn_affine(inter.head_relation_batch_norm, d, self.ent)
        self.ent_norm = self.ent * self.a1 + self.c1                   # BN_h of every head

    def tails(self, h: Tensor, r: Tensor) -> Tensor:
        w_r = torch.einsum("ijk,bj->bik", self.core, self.rel[r])
        z = torch.einsum("bi,bik->bk", self.ent_norm[h], w_r) * self.a2 + self.c2
        return z @ self.ent.t()

    def heads(self, r: Tensor, t: Tensor) -> Tensor:
        w_r = torch.einsum("ijk,bj->bik", self.core, self.rel[r])
        et = self.ent[t]
        v = torch.einsum("bik,bk->bi", w_r, et * self.a2)
        return self.ent_norm @ v.t() + (et * self.c2).sum(-1).unsqueeze(0)  # [N, b]


def _lookup(keys: Tensor, values: Tensor, queries: Tensor):
    """(row, value) pairs of every ``values[j]`` with ``keys[j] == queries[row]``
    (``keys`` sorted ascending), fully vectorised."""
    lo = torch.searchsorted(keys, queries, right=False)
    hi = torch.searchsorted(keys, queries, right=True)
    counts = hi - lo
    rows = torch.repeat_interleave(torch.arange(queries.numel()), counts)
    starts = torch.repeat_interleave(lo - (torch.cumsum(counts, 0) - counts), counts)
    return rows, values[starts + torch.arange(rows.numel())]


@torch.no_grad()
def link_prediction_mrr(model: Any, test_triples: Tensor, known_triples: Optional[Tensor] = None,
                        filtered: bool = True, max_triples: Optional[int] = 2000,
                        batch_size: int = 256, ks: Sequence[int] = (1, 3, 10), seed: int = 0,
                        device: Union[str, torch.device] = "cpu") -> Dict[str, float]:
    r"""Link-prediction mean reciprocal rank and Hits@k of a TuckER model on held-out triples.

    Each test triple (h, r, t) is ranked twice, against every candidate tail (h, r, ?) and
    every candidate head (?, r, t); the MRR averages both sides. Ranks are *realistic*
    (ties count half, the mean of optimistic and pessimistic rank). In the *filtered*
    setting the other true answers (from ``known_triples`` and ``test_triples``) are removed
    from the candidates before ranking (Bordes et al., 2013).

    .. math::
        \mathrm{MRR} = \frac{1}{2|T|} \sum_{(h,r,t) \in T}
        \Big( \frac{1}{\mathrm{rank}_t} + \frac{1}{\mathrm{rank}_h} \Big), \qquad
        \mathrm{Hits@}k = \frac{1}{2|T|} \sum \big( [\mathrm{rank}_t \le k]
        + [\mathrm{rank}_h \le k] \big)

    Args:
        model: :class:`TuckerEmbeddings` (the PyKEEN model is rebuilt from its state) or a
            PyKEEN model with ``score_t`` / ``score_h``.
        test_triples (LongTensor): held-out triples ``[M, 3]``.
        known_triples (LongTensor, optional): other true triples ``[M', 3]`` (e.g. the
            training triples) to filter. (default: ``None``)
        filtered (bool): filtered (``True``) or raw ranking. (default: ``True``)
        max_triples (int, optional): evaluate a random subset of this many test triples
            (drawn with ``seed``) for speed, a positive integer; ``None`` uses all.
            (default: ``2000``)
        batch_size (int): queries scored at once. (default: ``256``)
        ks (sequence of int): the k of Hits@k. (default: ``(1, 3, 10)``)
        seed (int): seed of the subset draw. (default: ``0``)
        device: where to score. (default: ``'cpu'``)

    Returns:
        dict with ``'mrr'``, ``'hits@k'`` for each k, ``'num_triples'`` and ``'filtered'``.
    """
    if isinstance(model, TuckerEmbeddings):
        model = model.to_pykeen_model(device)
    if not (hasattr(model, "score_t") and hasattr(model, "score_h")):
        raise TypeError(f"'model' must be TuckerEmbeddings or a PyKEEN model "
                        f"(got {type(model).__name__})")
    num_entities, num_relations = int(model.num_entities), int(model.num_relations)
    if max_triples is not None and (not isinstance(max_triples, numbers.Integral)
                                    or isinstance(max_triples, bool) or max_triples < 1):
        raise ValueError(f"'max_triples' must be a positive integer or None (got "
                         f"{max_triples!r})")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or batch_size < 1:
        raise ValueError(f"'batch_size' must be >= 1 (got {batch_size})")
    ks = tuple(ks)
    if not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) and k >= 1
               for k in ks):
        raise ValueError(f"'ks' must be positive integers (got {ks!r})")
    test = _check_triples(test_triples, "test_triples", num_entities, num_relations)
    known = (None if known_triples is None else
             _check_triples(known_triples, "known_triples", num_entities, num_relations))
    if test.size(0) == 0:
        raise ValueError("'test_triples' is empty")
    all_test = test
    if max_triples is not None and test.size(0) > max_triples:
        gen = torch.Generator().manual_seed(seed)
        test = test[torch.randperm(test.size(0), generator=gen)[:max_triples]]

    # true answers of every (h, r) / (r, t) query, for filtering: triples sorted by a
    # query key, so the answers of a batch of queries are found with searchsorted
    index = {}
    if filtered:
        parts = [all_test]
        if known is not None:
            parts.append(known)
        allt = torch.unique(torch.cat(parts), dim=0)
        for side, (q, a) in (("tail", (0, 2)), ("head", (2, 0))):
            key = allt[:, q] * num_relations + allt[:, 1]
            order = torch.argsort(key)
            index[side] = (key[order], allt[order, a])

    was_training = model.training
    model.eval()
    fast = None
    if getattr(model, "interaction", None) is not None and hasattr(model.interaction,
                                                                    "core_tensor"):
        fast = _TuckerScorer(model)  # TuckER: exact closed form, ~100x faster on CPU
    ranks = []
    try:
        for side in ("tail", "head"):
            for start in range(0, test.size(0), batch_size):
                batch = test[start:start + batch_size]
                if side == "tail":
                    target = batch[:, 2]
                    if fast is not None:
                        scores = fast.tails(batch[:, 0].to(fast.ent.device),
                                            batch[:, 1].to(fast.ent.device))
                    else:
                        scores = model.score_t(batch[:, :2].to(device))
                else:
                    target = batch[:, 0]
                    if fast is not None:
                        scores = fast.heads(batch[:, 1].to(fast.ent.device),
                                            batch[:, 2].to(fast.ent.device)).t()
                    else:
                        scores = model.score_h(batch[:, 1:].to(device))
                scores = scores.float().cpu()
                true = scores.gather(1, target.unsqueeze(1))
                if filtered:
                    keys, answers = index[side]
                    q = batch[:, 0] if side == "tail" else batch[:, 2]
                    rows, cols = _lookup(keys, answers, q * num_relations + batch[:, 1])
                    scores[rows, cols] = float("-inf")
                    scores.scatter_(1, target.unsqueeze(1), true)  # keep the true answer
                greater = (scores > true).sum(1).double()
                ties = (scores == true).sum(1).double() - 1.0  # the answer itself
                ranks.append(1.0 + greater + 0.5 * ties)
    finally:
        model.train(was_training)
    ranks = torch.cat(ranks)
    out = {"mrr": float((1.0 / ranks).mean())}
    for k in ks:
        out[f"hits@{k}"] = float((ranks <= k).double().mean())
    out["num_triples"] = int(test.size(0))
    out["filtered"] = bool(filtered)
    return out
