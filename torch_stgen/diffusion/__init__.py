"""torch_stgen.diffusion: noise schedules, DDPM / DDIM schedulers, EDM and the meta-pattern
(mean-shifted) diffusion of KGDiff."""
from .schedules import make_beta_schedule, alphas_cumprod_from_betas
from .ddpm import (FrozenConfig, SchedulerOutput, DDPMScheduler, DDIMScheduler,
                   diffusion_loss, sample)
from .edm import EDMPrecond, edm_loss, edm_sigma_steps, edm_sampler
from .meta_pattern import MetaPatternDiffusion

__all__ = [
    "make_beta_schedule", "alphas_cumprod_from_betas",
    "FrozenConfig", "SchedulerOutput", "DDPMScheduler", "DDIMScheduler",
    "diffusion_loss", "sample",
    "EDMPrecond", "edm_loss", "edm_sigma_steps", "edm_sampler",
    "MetaPatternDiffusion",
]
