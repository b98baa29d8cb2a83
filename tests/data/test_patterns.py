import pytest
import torch

from torch_stgen.data.patterns import SparsePattern


@pytest.mark.parametrize("kind", ["fixed", "random"])
@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.4, 0.8])
def test_exact_missing_count(kind, ratio):
    T, H, W = 5, 6, 7
    mask = SparsePattern(kind, ratio, seed=3)(T, H, W)
    assert mask.shape == (T, H, W) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    missing = (1 - mask).sum(dim=(1, 2))
    assert missing.tolist() == [round(ratio * H * W)] * T


def test_fixed_is_constant_random_changes():
    fixed = SparsePattern("fixed", 0.4, seed=1)(6, 8, 8)
    assert (fixed == fixed[0]).all()
    rand = SparsePattern("random", 0.4, seed=1)(6, 8, 8)
    assert not all(torch.equal(rand[0], rand[t]) for t in range(1, 6))


def test_seeded_reproducible():
    a = SparsePattern("random", 0.3, seed=7)(4, 5, 5)
    b = SparsePattern("random", 0.3, seed=7)(4, 5, 5)
    c = SparsePattern("random", 0.3, seed=8)(4, 5, 5)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    p = SparsePattern("fixed", 0.3, seed=7)
    assert torch.equal(p(2, 5, 5), p(2, 5, 5))      # calls do not advance a global state


def test_random_is_roughly_uniform_over_cells():
    mask = SparsePattern("random", 0.5, seed=0)(400, 4, 4)
    freq = (1 - mask).mean(dim=0)
    assert torch.allclose(freq, torch.full_like(freq, 0.5), atol=0.1)


def test_block_default_lower_right_quarter_and_custom():
    mask = SparsePattern("block")(3, 8, 6)
    assert (mask[:, 4:, 3:] == 0).all()
    assert mask.sum().item() == 3 * (48 - 12)
    custom = SparsePattern("block", block=(0, 2, 1, 3))(1, 4, 4)
    assert custom[0].tolist() == [[1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    with pytest.raises(ValueError, match="'block'"):
        SparsePattern("block", block=(0, 9, 0, 2))(1, 4, 4)


def test_node_mask():
    m = SparsePattern("random", 0.25, seed=2).node_mask(3, 20)
    assert m.shape == (3, 20)
    assert (1 - m).sum(dim=1).tolist() == [5.0, 5.0, 5.0]
    f = SparsePattern("fixed", 0.25, seed=2).node_mask(3, 20)
    assert (f == f[0]).all()
    with pytest.raises(ValueError, match="node_mask"):
        SparsePattern("block").node_mask(3, 20)


def test_parse_and_name():
    p = SparsePattern.parse("fixed:0.4", seed=5)
    assert (p.kind, p.ratio, p.seed) == ("fixed", 0.4, 5)
    assert p.name == "fixed:0.4"
    assert SparsePattern.parse(p.name, seed=5)(2, 4, 4).equal(p(2, 4, 4))
    assert SparsePattern.parse("block").kind == "block"
    assert SparsePattern.parse("block:0,1,0,1").block == (0, 1, 0, 1)
    assert repr(SparsePattern.parse("random:0.2")) == \
        "SparsePattern(kind='random', ratio=0.2, seed=0)"
    with pytest.raises(ValueError, match="'spec'"):
        SparsePattern.parse("fixed:abc")
    with pytest.raises(ValueError, match="'spec'"):
        SparsePattern.parse("block:0.25")
    with pytest.raises(ValueError, match="'spec'"):
        SparsePattern.parse("holes:0.2")


def test_split_specs_keeps_block_bounds_whole():
    """`--patterns fixed:0.4,block:0,2,0,2` was split at every comma, so a block with its
    own bounds could not be named on the command line."""
    split = SparsePattern.split_specs
    assert split("fixed:0.4,block:2,4,0,2,random:0.2") == \
        ["fixed:0.4", "block:2,4,0,2", "random:0.2"]
    assert split(" block , block: 0, 2 ,0,2,,fixed:0.2,") == \
        ["block", "block:0,2,0,2", "fixed:0.2"]
    assert split("block:0,2,0,2,block:2,4,2,4") == ["block:0,2,0,2", "block:2,4,2,4"]
    specs = split("random:0.2,block:0,1,0,3")
    masks = [SparsePattern.parse(s)(1, 4, 4) for s in specs]
    assert masks[1][0, 0, :3].eq(0).all() and masks[1].sum() == 13
    # splitting never invents bounds: a short list is left for parse() to refuse
    assert split("block:1,2,fixed:0.4") == ["block:1,2", "fixed:0.4"]
    with pytest.raises(ValueError, match="'spec' 'block:1,2'"):
        SparsePattern.parse(split("block:1,2")[0])
    with pytest.raises(TypeError, match="'text' must be a comma-separated string"):
        split(["fixed:0.4"])


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_bad_ratio(ratio):
    with pytest.raises(ValueError, match=r"'ratio' must be in \[0, 1\)"):
        SparsePattern("fixed", ratio)
    with pytest.raises(ValueError, match="'ratio'"):
        SparsePattern.parse(f"random:{ratio}")


def test_bad_kind_and_sizes():
    with pytest.raises(ValueError, match="'kind'"):
        SparsePattern("holes")
    with pytest.raises(ValueError, match="'H'"):
        SparsePattern("fixed")(2, 0, 3)


def test_draw_mixture_uses_fresh_seeds_and_every_kind():
    pats = [SparsePattern.parse(s, seed=7) for s in ("fixed:0.5", "random:0.25", "block")]
    g = torch.Generator().manual_seed(0)
    m = SparsePattern.draw_mixture(pats, 60, 3, 4, 4, g)
    assert m.shape == (60, 3, 4, 4) and set(m.unique().tolist()) <= {0.0, 1.0}
    missing = (1 - m).sum((-1, -2))                      # [60, 3] missing cells per step
    fixed = [(w[0] == w).all() and missing[i, 0] == 8 for i, w in enumerate(m)]
    assert any(fixed)                                    # fixed: one mask over the window
    assert (missing == 4).any()                          # random 25 % of 16 cells
    block = torch.ones(4, 4)
    block[2:, 2:] = 0
    assert any(bool((w == block).all()) for w in m)      # the lower-right quarter
    # fresh seeds: the evaluation mask (the pattern's own seed 7) is not what is drawn
    evald = pats[1](3, 4, 4)
    assert not any(bool((w == evald).all()) for w in m)
    # reproducible from the generator alone
    again = SparsePattern.draw_mixture(pats, 60, 3, 4, 4, torch.Generator().manual_seed(0))
    assert torch.equal(m, again)
    with pytest.raises(ValueError, match="'patterns'"):
        SparsePattern.draw_mixture([], 1, 1, 2, 2, g)


def test_a_pattern_never_hides_every_cell():
    # round(0.9 * 2) = 2 of 2 cells: refused rather than an all-missing "observation"
    with pytest.raises(ValueError, match=r"'random:0.9' hides all 2 cells .*round\(0.9 \* 2\)"):
        SparsePattern("random", 0.9)(3, 1, 2)
    with pytest.raises(ValueError, match="hides all 1 nodes"):
        SparsePattern("fixed", 0.6).node_mask(2, 1)
    with pytest.raises(ValueError, match=r"hides the whole 1x1 map"):
        SparsePattern("block")(2, 1, 1)
    assert SparsePattern("random", 0.4)(3, 1, 2).sum().item() == 3.0   # 1 of 2 missing
    assert SparsePattern("random", 0.0)(2, 1, 1).all()


def test_sizes_of_any_integer_type():
    np = pytest.importorskip("numpy")
    a = SparsePattern("random", 0.5, seed=1)(np.int64(2), np.int32(3), 3)
    assert torch.equal(a, SparsePattern("random", 0.5, seed=1)(2, 3, 3))
    assert SparsePattern("random", 0.5, seed=1)(torch.tensor(2), 3, 3).shape == (2, 3, 3)
    for bad in (2.0, True, "2", torch.tensor([2]), torch.tensor(True)):
        with pytest.raises(ValueError, match="'T' must be a positive integer"):
            SparsePattern("random", 0.5)(bad, 3, 3)
