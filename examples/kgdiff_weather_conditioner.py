"""KGDiff with a conditioner of your own: the day's weather.

On the synthetic city rain deepens road congestion by 30 % (``SyntheticCity``'s
docstring). The knowledge graph cannot know which day it rains; a conditioner that reads
the day's rain profile can. This script trains three KGDiff models on the weekdays of
the northern 70 % of the sensors and generates every weekday of the unseen southern 30 %:

* ``KGDiff``: no weather;
* ``KGDiff + DayRain, no rain``: the control, the same model as the next one (the same
  seed, so the same initial weights) whose ``DayRain`` is told "no rain" on every day;
* ``KGDiff + DayRain``: told each day's rain, in training and in generation.

Only the last two differ in what the model is told, so their difference is what the
weather information itself does. The script prints (mph):

* rain bias: the mean of generated minus real speed over the rainy steps (a model that
  does not know the weather generates rainy steps too fast), and the same over dry steps;
  their difference is the rain slowdown the model misses (the real rainy steps run
  1.51 mph slower than the dry ones, each against its sensor's mean day);
* day-level MAE: each generated day against the real day of the same date;
* profile MAE: the per-sensor mean day, the benchmark's MAE.

About a minute and a half on a 2-core CPU (``--steps 200``, the main job's KGDiff
budget)::

    python examples/kgdiff_weather_conditioner.py --steps 200 --seed 0
"""
import argparse
import time

import numpy as np
import torch
from torch import nn

from torch_stgen.data import DailyDataset, SyntheticCity, split_nodes_by_latitude
from torch_stgen.kg import pretrain_tucker
from torch_stgen.models import KGDiff
from torch_stgen.nn import Conditioner


class DayRain(Conditioner):
    """The day's rain profile ``[L]`` (0/1 per step) as a conditioning vector."""

    vector_dim = 16

    def __init__(self, length: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(length, 32), nn.SiLU(),
                                 nn.Linear(32, self.vector_dim))

    def forward(self, batch):
        return {"vector": self.net(batch["rain"])}


def weekday_weather(city: SyntheticCity, test_frac: float = 0.3) -> dict:
    """The weekday series, rain profiles and node split of ``city``.

    Returns ``values`` ``[D, N, L]``, ``rain`` ``[D, L]`` (the rain flag of every step of
    every kept weekday), ``train`` / ``test`` node indices (the test sensors are the
    southern ``test_frac``), and the training rows: ``x`` ``[D * n_train, L]`` with
    ``nodes`` and ``rain_rows``, row ``d * n_train + j`` being day ``d`` of sensor
    ``train[j]`` under that day's rain.
    """
    roads = city.roads
    days = DailyDataset(roads, weekdays="weekday", holidays=roads.meta.get("holidays"))
    values, L = days.values, days.steps_per_day                # [D, N, L] mph
    D = values.shape[0]
    all_days = np.unique(roads.timestamps.astype("datetime64[D]"))
    rain = roads.ext[:, 1].reshape(len(all_days), L)[np.searchsorted(all_days, days.dates)]
    train, test = split_nodes_by_latitude(roads.lat, test_frac, direction="south")
    return {"values": values, "rain": rain, "train": train, "test": test,
            "x": values[:, train].reshape(-1, L), "nodes": train.repeat(D),
            "rain_rows": rain.repeat_interleave(train.numel(), 0)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tucker-epochs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)

    city = SyntheticCity(seed=0, height=16, width=16, days=14, num_sensors=200)
    kg = city.kg
    kg.set_node_entities(city.road_node2entity)
    data = weekday_weather(city)
    values, rain, train, test = data["values"], data["rain"], data["train"], data["test"]
    D, L = rain.shape
    print(f"{D} weekdays, rain on {int((rain.sum(1) > 0).sum())} of them; "
          f"{train.numel()} training sensors, {test.numel()} unseen ones")
    tucker = pretrain_tucker(kg, dim=32, epochs=args.tucker_epochs, seed=args.seed,
                             progress=False)
    real = values[:, test]                                     # [D, n_test, L]
    wet = (rain[:, None, :] > 0).expand_as(real)
    print("| model | rain bias | dry bias | missed rain slowdown | day-level MAE | "
          "profile MAE | seconds |\n|---|---|---|---|---|---|---|")
    for name, told in (("KGDiff", None), ("KGDiff + DayRain, no rain", 0.0),
                       ("KGDiff + DayRain", 1.0)):
        torch.manual_seed(args.seed)                        # each model from the same seed
        conds = None if told is None else [DayRain(L)]
        model = KGDiff(kg, tucker.entity, L, 3, 16, dim=64, model_channels=16,
                       guidance_dropout=0.1, conditioners=conds)
        t0 = time.perf_counter()
        model.fit(data["x"], data["nodes"], steps=args.steps, batch_size=32, seed=args.seed,
                  progress=False,
                  inputs=None if told is None else {"rain": told * data["rain_rows"]})
        # sample d of every unseen sensor is generated under day d's weather
        inputs = (None if told is None else
                  {"rain": told * rain[:, None, :].expand(D, test.numel(), L)})
        gen = model.generate(test, num_samples=D, num_steps=6, seed=args.seed + 1,
                             inputs=inputs)
        err = gen - real
        day_mae = float(err.abs().mean())
        profile_mae = float((gen.mean(0) - real.mean(0)).abs().mean())
        rain_bias, dry_bias = float(err[wet].mean()), float(err[~wet].mean())
        print(f"| {name} | {rain_bias:+.3f} | {dry_bias:+.3f} | {rain_bias - dry_bias:+.3f} | "
              f"{day_mae:.3f} | {profile_mae:.3f} | {time.perf_counter() - t0:.0f} |")


if __name__ == "__main__":
    main()
