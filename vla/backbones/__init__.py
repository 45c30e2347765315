"""Backbone presets by name; `backbone.name` in the config picks one."""
from __future__ import annotations

from vla.backbones.base import Backbone
from vla.config import BackboneConfig

# name -> (family, what it is); tiny_*/small_* are random-weight presets, the rest load `pretrained`
PRESETS = {
    "tiny_paligemma": "PaliGemma-style (SigLIP + Gemma), random weights, ~1M parameters",
    "tiny_smolvlm": "SmolVLM/Idefics3-style (SigLIP + pixel shuffle + Llama), random weights, ~1M parameters",
    "tiny_qwen2_5_vl": "Qwen2.5-VL-style (window-attention ViT + patch merger + Qwen2.5), random weights, ~1.5M parameters",
    "small_paligemma": "PaliGemma-style, random weights, width 512, 8 layers, patch 16 (~28M): compute-bound benchmarks",
    "paligemma": "PaliGemma checkpoint via from_pretrained (e.g. google/paligemma-3b-pt-224)",
    "smolvlm": "SmolVLM/Idefics3 checkpoint via from_pretrained (e.g. HuggingFaceTB/SmolVLM-256M-Instruct)",
    "qwen2_5_vl": "Qwen2.5-VL checkpoint via from_pretrained (e.g. Qwen/Qwen2.5-VL-3B-Instruct); image_size % 28 == 0",
    "openvla": "OpenVLA/Prismatic checkpoint via from_pretrained(trust_remote_code) (openvla/openvla-7b)",
}


def build_backbone(cfg: BackboneConfig) -> Backbone:
    from vla.backbones.hf_vlm import Idefics3Backbone, PaliGemmaBackbone

    if cfg.name not in PRESETS:
        raise ValueError(f"unknown backbone '{cfg.name}'; valid: {', '.join(PRESETS)}")
    if cfg.name == "tiny_qwen2_5_vl":
        from vla.backbones.qwen_vl import QwenVLBackbone

        return QwenVLBackbone.tiny(cfg.image_size)
    if cfg.name == "small_paligemma":
        return PaliGemmaBackbone.small(cfg.image_size)
    if cfg.name.startswith("tiny_"):
        cls = PaliGemmaBackbone if cfg.name == "tiny_paligemma" else Idefics3Backbone
        return cls.tiny(cfg.image_size)
    if not cfg.pretrained:
        raise ValueError(f"backbone '{cfg.name}' loads real weights: set backbone.pretrained=<hub id or local dir>")
    if cfg.name == "openvla":
        from vla.backbones.openvla import OpenVLABackbone

        return OpenVLABackbone.pretrained(cfg.pretrained, cfg.dtype)
    if cfg.name == "qwen2_5_vl":
        from vla.backbones.qwen_vl import QwenVLBackbone

        return QwenVLBackbone.pretrained(cfg.pretrained, cfg.dtype, cfg.image_size)  # native-resolution ViT
    cls = PaliGemmaBackbone if cfg.name == "paligemma" else Idefics3Backbone
    return cls.pretrained(cfg.pretrained, cfg.dtype)
