"""Policy = backbone + action head + normalizer + prompt.

Normalization happens here and only here: `loss` takes raw dataset actions/state and `act` returns
raw env actions, so training and acting cannot disagree about statistics.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vla.backbones import build_backbone
from vla.config import ExperimentConfig
from vla.data.transforms import PromptEncoder, images_to_pixels, random_shift
from vla.heads import RLSample, build_head, samples_bins
from vla.heads.noise import Noise
from vla.heads.value import ValueHead
from vla.normalize import Normalizer
from vla.sequence import Prefix

STATE, ACTION = "state", "action"
SAMPLERS = ("deterministic", "stochastic")


class Policy(nn.Module):
    def __init__(self, cfg: ExperimentConfig, normalizer: Normalizer, state_dim: int):
        super().__init__()
        if cfg.head.sampler not in SAMPLERS:
            raise ValueError(f"head.sampler '{cfg.head.sampler}' is unknown; valid: {', '.join(SAMPLERS)}")
        if cfg.head.sampler == "stochastic" and cfg.head.type == "oft" and cfg.head.oft_output == "l1":
            raise ValueError("head.sampler=stochastic needs a head with a stochastic sampler; the oft head with "
                             "oft_output=l1 is deterministic (use oft_output=tokens or another head)")
        # these heads only represent actions in [-1, 1] (bins on [-1, 1]; a diffusion sample clipped to it): under
        # mean_std that is +-1 sd, so about a third of the actions would be clipped in training and unreachable after
        bounded = cfg.head.type == "diffusion" or samples_bins(cfg.head)
        if bounded and cfg.norm.action == "mean_std":
            raise ValueError(f"norm.action=mean_std with head '{cfg.head.type}': this head represents actions only in "
                             "[-1, 1], i.e. within one standard deviation; use norm.action=q01_q99 (or identity for "
                             "actions already in [-1, 1])")
        self.cfg = cfg
        self.normalizer = normalizer
        self.state_dim = state_dim
        self.backbone = build_backbone(cfg.backbone)
        self.head = build_head(cfg.head, self.backbone)
        width = self.backbone.hidden_size
        # proprio as one extra prefix token, projected into the backbone width (OpenVLA-OFT)
        self.proprio = (
            nn.Sequential(nn.Linear(state_dim, width), nn.GELU(), nn.Linear(width, width)) if cfg.data.use_state else None
        )
        self.value_head = ValueHead(width) if cfg.head.value_head else None
        self.prompts = PromptEncoder(self.backbone.tokenizer, cfg.prompt.template, cfg.prompt.max_tokens)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def build_prefix(
        self, images: torch.Tensor, state: torch.Tensor, instructions: list[str], generator: torch.Generator | None = None,
        augment: bool = False,
    ) -> Prefix:
        """images uint8 (B, cams, H, W, 3), raw state (B, S), one instruction per row."""
        dev = self.device
        pixels = images_to_pixels(images, self.backbone.image_size)
        if augment:
            pixels = random_shift(pixels, self.cfg.data.augment_shift, generator)
        image_embeds = self.backbone.embed_images(pixels.to(dev))
        ids, valid_text = self.prompts(instructions)
        text = self.backbone.embed_tokens(ids.to(dev))
        b = images.shape[0]
        valid_images = torch.ones(b, image_embeds.shape[1], dtype=torch.bool)
        if self.backbone.bos_before_images:  # the layout the pretrained model read: [BOS][images][prompt]
            if not bool((ids[:, 0] == self.backbone.tokenizer.bos_id).all()):
                raise ValueError("this backbone reads BOS before the images, but the prompt's first token is not BOS")
            parts = [text[:, :1], image_embeds, text[:, 1:]]
            valid = [valid_text[:, :1], valid_images, valid_text[:, 1:]]
        else:
            parts, valid = [image_embeds, text], [valid_images, valid_text]
        if self.proprio is not None:
            state_n = self.normalizer.normalize(STATE, state.float()).to(dev)
            parts.append(self.proprio(state_n).unsqueeze(1).to(parts[0].dtype))
            valid.append(torch.ones(b, 1, dtype=torch.bool))
        return Prefix(self.backbone, torch.cat(parts, dim=1), torch.cat(valid, dim=1).to(dev))

    def forward(self, batch: dict, generator: torch.Generator | None = None):
        """BC loss (forward is what DDP wraps)."""
        return self.loss(batch, generator)

    def loss(self, batch: dict, generator: torch.Generator | None = None,
             augment: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
        prefix = self.build_prefix(batch["images"], batch["state"], batch["task"], generator, augment=augment)
        actions = self.normalizer.normalize(ACTION, batch["action"].float()).to(self.device)
        return self.head.loss(prefix, actions, batch["action_pad"].to(self.device), generator)

    @torch.no_grad()
    def act(self, images: torch.Tensor, state: torch.Tensor, instructions: list[str],
            generator: Noise = None) -> np.ndarray:
        """Raw env actions (B, chunk, action_dim) for a batch of observations, drawn with the
        sampler `head.sampler` names."""
        prefix = self.build_prefix(images, state, instructions)
        if self.cfg.head.sampler == "stochastic":
            chunk = self.head.sample_rl(prefix, generator).actions.float().cpu()
        else:
            chunk = self.head.sample(prefix, generator).float().cpu()
        return self.normalizer.unnormalize(ACTION, chunk).numpy()

    @torch.no_grad()
    def act_rl(self, images: torch.Tensor, state: torch.Tensor, instructions: list[str],
               generator: Noise = None) -> tuple[np.ndarray, RLSample, torch.Tensor | None]:
        """Exploratory raw env actions, the head's RL sample (normalized, with its record) and the
        critic's value when there is one."""
        prefix = self.build_prefix(images, state, instructions)
        sample = self.head.sample_rl(prefix, generator)
        value = self.value_head(prefix) if self.value_head is not None else None
        raw = self.normalizer.unnormalize(ACTION, sample.actions.float().cpu()).numpy()
        return raw, sample, value

    def freeze_base(self) -> None:
        """Residual policies: freeze the backbone, proprio projector and base head; only the
        residual (and a critic) stay trainable."""
        if not hasattr(self.head, "freeze_base"):
            raise ValueError(f"freeze_base needs a residual head, this policy has {type(self.head).__name__}")
        self.backbone.requires_grad_(False)
        if self.proprio is not None:
            self.proprio.requires_grad_(False)
        self.head.freeze_base()
