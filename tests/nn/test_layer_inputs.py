"""Bad inputs to the public layers and conditioners are refused by name (or cast where the
library casts elsewhere), instead of raw torch errors or silently wrong outputs."""
import pytest
import torch

from torch_stgen.diffusion import DDPMScheduler, MetaPatternDiffusion
from torch_stgen.nn import (Conditioner, ConditionerStack, ExternalConditioner,
                            ObservedMapConditioner, STPointEmbedding, STPointFormer,
                            TimesBlock, TPatternNet)


@pytest.mark.parametrize("value", [float("nan"), -1.0, 0.5, 2.0])
def test_observed_map_conditioner_refuses_a_non_binary_mask(value):
    """NaN, -1, 0.5 and 2 counted as observed (!= 0): the cell's value went in, flag 1."""
    mask = torch.ones(1, 1, 2, 2)
    mask[0, 0, 0, 0] = value
    with pytest.raises(ValueError, match=r"'batch\['mask'\]' must contain only 0 and 1"):
        ObservedMapConditioner(1)({"obs": torch.ones(1, 1, 2, 2), "mask": mask})
    ok = ObservedMapConditioner(1)({"obs": torch.ones(1, 1, 2, 2),
                                    "mask": torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])})
    assert ok["map"][0, 1].tolist() == [[1.0, 0.0], [1.0, 1.0]]


@pytest.mark.parametrize("value", [float("nan"), -1.0, 0.5])
def test_st_point_embedding_refuses_a_non_binary_mask(value):
    emb = STPointEmbedding(1, 4, 1, num_nodes=2)
    mask = torch.tensor([1.0, value]).view(1, 1, 2, 1)
    with pytest.raises(ValueError, match="'mask' must contain only 0 and 1"):
        emb(torch.ones(1, 1, 2, 1), mask)
    _, key = emb(torch.ones(1, 1, 2, 1), torch.tensor([1.0, 0.0]).view(1, 1, 2, 1))
    assert key.tolist() == [[True, False]]


def test_layers_name_x_on_a_dtype_mismatch_and_cast_integer_inputs():
    emb = STPointEmbedding(2, 8, 3, num_nodes=4, ext_features=2)
    x = torch.randn(2, 3, 4, 2)
    ext = torch.randn(2, 3, 2)
    for call in (lambda: emb(x.double(), None, ext),
                 lambda: TimesBlock(8, 4, 4, 2, 2)(torch.randn(2, 8, 4, dtype=torch.float64)),
                 lambda: TPatternNet(4, 8, 8, 8, top_k=2)(torch.randn(2, 8, 4).double())):
        with pytest.raises(TypeError, match="'x' is torch.float64 but the layer's "
                                            "parameters are torch.float32"):
            call()
    # integer / float64 conditioning covariates are cast, as ExternalEmbedding does
    want = emb(x, None, ext.round())[0]
    torch.testing.assert_close(emb(x, None, ext.round().long())[0], want)
    torch.testing.assert_close(emb(x, None, ext.round().double())[0], want)
    # integer counts as the series are cast too
    counts = torch.randint(0, 9, (2, 3, 4, 2))
    torch.testing.assert_close(emb(counts, None, ext)[0], emb(counts.float(), None, ext)[0])
    # and a float64 layer takes float64 input
    block = TimesBlock(8, 4, 4, 2, 2).double()
    assert block(torch.randn(2, 8, 4, dtype=torch.float64)).dtype == torch.float64
    former = STPointFormer(2, 8, num_layers=1, num_heads=2, history=3, num_nodes=4)
    with pytest.raises(TypeError, match="'x' is torch.float64"):
        former(x.double())


def test_tpatternnet_empty_four_dimensional_batch_is_named():
    net = TPatternNet(4, 8, 8, 8, top_k=2)
    with pytest.raises(ValueError, match="'x' is an empty batch"):
        net(torch.zeros(0, 8, 2, 2))


def test_timesblock_names_seq_len_when_it_is_too_short():
    with pytest.raises(ValueError, match="'seq_len' must be >= 2"):
        TimesBlock(1, 4, 4, 1, 2)


def test_pairs_refuse_fractions():
    """grid=(2.7, 2) became (2, 2) without a word."""
    with pytest.raises(ValueError, match="'grid' must be a pair of positive ints"):
        STPointEmbedding(1, 4, 1, grid=(2.7, 2))
    with pytest.raises(ValueError, match="'grid' must be a pair of positive ints"):
        STPointEmbedding(1, 4, 1, grid=3)
    assert STPointEmbedding(1, 4, 1, grid=(torch.tensor(2), 2)).grid == (2, 2)


def test_st_point_embedding_refuses_pos_it_cannot_use():
    with pytest.raises(ValueError, match="'pos' was given but the layer was built with "
                                         "pos_features=0"):
        STPointEmbedding(1, 4, 1, num_nodes=2)(torch.ones(1, 1, 2, 1), pos=torch.zeros(2, 2))


def test_stack_checks_that_its_conditioners_agree_on_the_batch_size():
    class Wrong(Conditioner):
        map_channels = 1

        def forward(self, batch):
            return {"map": torch.ones(3, 1, 4, 4)}
    batch = {"obs": torch.randn(2, 1, 4, 4), "mask": torch.ones(2, 1, 4, 4)}
    with pytest.raises(ValueError, match=r"Wrong output 'map' must have shape "
                                         r"\[B, 1, H, W\] with B=2 \(got \(3, 1, 4, 4\)\)"):
        ConditionerStack([ObservedMapConditioner(1), Wrong()])(batch)


def test_external_conditioner_refuses_windows_of_different_length():
    cond = ExternalConditioner(8, ext_features=2)
    time = torch.tensor([[[float(h), 1.0, 0.0] for h in range(4)]])
    with pytest.raises(ValueError, match=r"cover windows of different length \(5 vs 4"):
        cond({"time_y": time, "ext_y": torch.randn(1, 5, 2)})
    assert cond({"time_y": time, "ext_y": torch.randn(1, 4, 2)})["vector"].shape == (1, 8)


def test_meta_pattern_names_aux_f_and_the_missing_pattern():
    mpd = MetaPatternDiffusion(DDPMScheduler(50), aux_weight=0.5)
    with pytest.raises(ValueError, match=r"'aux_f' must broadcast to the sample shape"):
        mpd.edm_loss(lambda y, s: y, torch.randn(3, 6), f=torch.randn(6),
                     aux_f=torch.randn(4), sigma_data=1.0)
    with pytest.raises(ValueError, match=r"'f' \(the pattern, broadcastable to \(3, 6\)\) "
                                         r"is required"):
        mpd.q_sample(torch.randn(3, 6), None, 3)
    with pytest.raises(TypeError, match=r"'f' \(the pattern\) must be a tensor"):
        mpd.sample(lambda x, t: x, None, shape=(3, 6))
