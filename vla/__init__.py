"""VLA toolkit: fine-tune vision-language-action policies (backbone + action head)."""

__version__ = "0.1.0"
