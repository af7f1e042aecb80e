"""OnlineRun's mechanics: the parameters it steps are the ones ``prepare`` left in the model."""

import accelerate
import torch

from rlhfkit.testing import tiny_causal_lm
from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer
from tests.trainers.online_helpers import in_target, prompt_rows, small


def swapping_prepare(real):
    """``Accelerator.prepare`` that then replaces every parameter with a new one, as FSDP2 does
    (it swaps in sharded parameters), keeping the optimiser pointed at the new ones."""

    def prepare(self, *objects):
        model, optimizer = real(self, *objects)
        fresh = {}
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is not None:
                    if id(p) not in fresh:  # tied weights stay tied
                        fresh[id(p)] = torch.nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
                    module._parameters[name] = fresh[id(p)]
        for group in optimizer.param_groups:
            group["params"] = [fresh[id(p)] for p in group["params"]]
        return model, optimizer

    return prepare


def test_params_are_taken_after_prepare(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(accelerate.Accelerator, "prepare", swapping_prepare(accelerate.Accelerator.prepare))
    trainer = GRPOTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), reward_funcs=in_target,
                          args=GRPOConfig(**small(tmp_path, max_steps=1)), train_dataset=prompt_rows(),
                          processing_class=tokenizer)
    run = trainer.loop
    in_model = {id(p) for p in run.model.parameters()}
    assert run.params and all(id(p) in in_model for p in run.params)
    stepped = [p for group in run.optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in run.params} == {id(p) for p in stepped} and len(run.params) == len(stepped)
    before = [p.detach().clone() for p in run.params]
    trainer.train()
    assert any(not torch.equal(b, p) for b, p in zip(before, run.params))  # the clipped, stepped ones train
