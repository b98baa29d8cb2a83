"""Compose ``TimesBlock`` / ``TPatternNet`` with plain PyTorch.

1. **Period discovery**: two weeks of hourly city maps (``T = 336``) with a daily and a weekly
   cycle; ``TimesBlock.find_periods`` recovers the periods 24 and 168 from the spectrum.
2. **T-PatternNet as an inter-map encoder** (DiffRecon's Diffusion-F): the ``I * J`` coarse
   cell series of the last two days are encoded, mapped back to the cells and stacked per
   ``2 x 2`` sub-region (``[B, T * 4, I/2, J/2]``), then fused with a conv encoder of the last
   map to predict the next map. A few Adam steps; the printed loss goes down.

Run: ``python examples/layers_times.py [--steps 40]``
"""
import argparse
import math

import torch
from torch import nn

from torch_stgen.nn import TimesBlock, TPatternNet


def city_series(B, T, I, J, generator):
    """Hourly maps ``[B, T, I * J]`` with daily and weekly cycles of cell-specific strength."""
    t = torch.arange(float(T)).view(1, T, 1)
    daily = torch.rand(B, 1, I * J, generator=generator) + 0.5
    weekly = 0.8 * torch.rand(B, 1, I * J, generator=generator)
    start = torch.randint(0, 168, (B, 1, 1), generator=generator).float()
    x = (daily * torch.sin(2 * math.pi * (t + start) / 24)
         + weekly * torch.sin(2 * math.pi * (t + start) / 168))
    return x + 0.05 * torch.randn(B, T, I * J, generator=generator)


class NextMapHead(nn.Module):
    def __init__(self, net: TPatternNet, hidden: int = 16):
        super().__init__()
        self.net = net
        self.encoder = nn.Conv2d(1, hidden, 3, stride=2, padding=1)
        self.decoder = nn.Sequential(
            nn.Conv2d(hidden + net.stacked_channels(), hidden, 3, padding=1), nn.SiLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(hidden, 1, 3, padding=1))

    def forward(self, x):  # x: [B, T, I * J]
        B, T, _ = x.shape
        I, J = self.net.grid
        feat = self.encoder(x[:, -1].view(B, 1, I, J))
        pattern = self.net.stack(self.net(x))  # [B, T * 4, I / 2, J / 2]
        return self.decoder(torch.cat([feat, pattern], 1)).view(B, I * J)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    I, J = 4, 4

    # 1. periods ---------------------------------------------------------------------------
    x = city_series(4, 336, I, J, gen)
    block = TimesBlock(seq_len=336, d_model=I * J, d_ff=8, top_k=2, num_kernels=3)
    periods, amplitudes = block.find_periods(x)
    print(block)
    print("discovered periods:", periods, "softmax weights of sample 0:",
          [round(w, 3) for w in torch.softmax(amplitudes[0], 0).tolist()])
    print("TimesBlock output", tuple(block(x).shape))

    # 2. T-PatternNet ------------------------------------------------------------------------
    T = 48
    net = TPatternNet(in_channels=I * J, seq_len=T, d_model=16, d_ff=16, num_layers=2,
                      top_k=3, num_kernels=3, grid=(I, J), down=(I // 2, J // 2))
    print(net)
    model = NextMapHead(net)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    window = []
    for step in range(args.steps):
        series = city_series(16, T + 1, I, J, gen)
        loss = nn.functional.mse_loss(model(series[:, :T]), series[:, T])
        opt.zero_grad()
        loss.backward()
        opt.step()
        window.append(loss.item())
        if len(window) == 10 or step == args.steps - 1:
            mean = sum(window) / len(window)
            print(f"steps {step + 1 - len(window):3d}-{step:3d}  mean mse {mean:.5f}")
            window = []
    h = net(series[:, :T])
    print("encoding", tuple(h.shape), "-> stacked", tuple(net.stack(h).shape))


if __name__ == "__main__":
    main()
