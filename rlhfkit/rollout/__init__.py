"""Prompts -> responses (+ masks). HF ``generate`` now; vLLM is an optional later engine."""

from .generate import generate_responses, left_pad, truncate_after_eos

__all__ = ["generate_responses", "left_pad", "truncate_after_eos"]
