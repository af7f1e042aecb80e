"""The whole pipeline as functions: the offline demo and the PPO-versus-DPO comparison.

    from rlhfkit.pipeline import PipelineConfig, run_demo
    run_demo(PipelineConfig(output_dir="runs/demo"))       # what `rlhfkit demo` runs

``corpus`` (generated data and the hidden true quality), ``annotators`` (simulated
raters), ``stages`` (pre-training, SFT, feedback, reward model), ``compare`` (PPO and DPO
on one budget, evaluation, report), ``demo`` (all of it in order).
"""

from .compare import run_compare
from .config import QUICK, CompareConfig, MethodsConfig, PipelineConfig
from .demo import run_demo

__all__ = ["QUICK", "CompareConfig", "MethodsConfig", "PipelineConfig", "run_compare", "run_demo"]
