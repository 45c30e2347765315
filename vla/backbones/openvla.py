"""The real OpenVLA checkpoint (`openvla/openvla-7b`): Prismatic fused DINOv2 + SigLIP vision
backbone, MLP projector, Llama-2 7B decoder. Loaded with transformers' trust_remote_code classes
(the checkpoint ships its own modeling code); needs internet for the weights and a GPU to be useful.
"""
from __future__ import annotations

import torch
from torch import nn

from vla.backbones.base import Backbone
from vla.backbones.hf_vlm import _dtype, _hf_tokenizer


# OpenVLA's ActionTokenizer: 256 bin edges on [-1, 1], i.e. 255 bins, as the top ids of Llama-2's text vocabulary
ACTION_BINS = 255


class OpenVLABackbone(Backbone):
    prefix_bidirectional = False  # Llama is causal over the prefix
    bos_before_images = True  # Prismatic's forward splices the patches in after BOS: [BOS][patches][prompt]
    image_mean = (0.5, 0.5, 0.5)  # unused: each fused vision backbone has its own (see embed_images)
    image_std = (0.5, 0.5, 0.5)

    def __init__(self, model: nn.Module, means: list, stds: list, image_size: int, tokenizer):
        super().__init__()
        self.model = model
        self.means, self.stds = means, stds
        lm_cfg = model.language_model.config
        self.hidden_size = lm_cfg.hidden_size
        self.vocab_size = lm_cfg.vocab_size
        self.image_size = image_size
        vision = model.vision_backbone
        # openvla/openvla-7b's remote code has no get_num_patches (only the OFT forks add it); its timm ViT
        # featurizer knows the count, the same for a fused pair (their features are stacked per patch)
        self.tokens_per_image = (vision.get_num_patches() if hasattr(vision, "get_num_patches")
                                 else vision.featurizer.patch_embed.num_patches)
        self.tokenizer = tokenizer
        # OpenVLA's ActionTokenizer: id = tokenizer.vocab_size - digitize(a, 256 edges on [-1, 1]), the text
        # vocabulary's (32000 for Llama-2; the embedding is padded to 32064) top ids, counting down
        self.pretrained_action_tokens = (tokenizer.text_vocab_size - 1, ACTION_BINS)
        # its prompt ends "Out: ": Llama's "▁" (29871) is what openvla-7b read before the first action token
        self.action_start_id = tokenizer.token_id("\u2581")

    @classmethod
    def pretrained(cls, name: str, dtype: str) -> "OpenVLABackbone":
        from transformers import AutoImageProcessor, AutoModelForVision2Seq

        try:
            # eager first: the checkpoint's code reads `_supports_sdpa` off its language model before building it,
            # which transformers >= 4.50 asks for while choosing the default (sdpa) attention: AttributeError
            # (openvla issue #346, openvla-oft #108). The decoder is switched to sdpa once it exists.
            model = AutoModelForVision2Seq.from_pretrained(name, trust_remote_code=True, torch_dtype=_dtype(dtype),
                                                           attn_implementation="eager")
            proc = AutoImageProcessor.from_pretrained(name, trust_remote_code=True)
        except ImportError as err:
            if "timm" not in str(err):
                raise
            raise ImportError(f"{name}'s own modeling code needs timm 0.9 (it refuses 1.x): "
                              "pip install -e '.[openvla]' (timm==0.9.16)") from err
        model.language_model.set_attn_implementation("sdpa")
        size = int(proc.input_sizes[0][-1])
        tokenizer = _hf_tokenizer(name, model.language_model.config.vocab_size)
        return cls(model, list(proc.means), list(proc.stds), size, tokenizer)

    def embed_images(self, pixels: torch.Tensor) -> torch.Tensor:
        b, c = pixels.shape[:2]
        flat = pixels.flatten(0, 1)
        # the fused backbone takes DINOv2 and SigLIP inputs stacked on the channel axis, each
        # normalized with its own statistics (as PrismaticImageProcessor does)
        parts = []
        for mean, std in zip(self.means, self.stds):
            m = torch.tensor(mean, dtype=flat.dtype, device=flat.device).view(3, 1, 1)
            s = torch.tensor(std, dtype=flat.dtype, device=flat.device).view(3, 1, 1)
            parts.append((flat - m) / s)
        patches = self.model.vision_backbone(torch.cat(parts, dim=1).to(self.model.dtype))
        feats = self.model.projector(patches)
        return feats.reshape(b, c * feats.shape[1], feats.shape[2])

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.language_model.get_input_embeddings()(ids)

    def vision_encoder(self) -> list[nn.Module]:
        return [self.model.vision_backbone]  # the fused DINOv2 + SigLIP featurizers; its projector is separate

    def decoder(self) -> nn.Module:
        return self.model.language_model.model

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.language_model.lm_head(hidden)
