"""One tiny training run, the same under ``python`` and under ``accelerate launch``.

    python train_tiny.py <method> <output_dir> <per_device_batch> <grad_accum> [--no-save]

``method``: sft, reward, dpo, ppo (value head + frozen reference), ppo_critic (separate
critic), grpo or rloo (RLOO with its KL to a frozen reference). Besides the model in ``output_dir`` it writes ``world.json`` (how Accelerate really
ran: distributed type, processes, model class), so a test can tell sharded from plain runs.
PPO also writes ``weights.safetensors``: the trained modules' full weights gathered through
``Mechanics.full_state_dict`` (every rank takes part), then calls the public
``PPOTrainer.save_pretrained`` unless ``--no-save``.
Used by ``test_distributed.py``; each run takes seconds on CPU.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from rlhfkit.testing import hidden_rule_preferences, tiny_causal_lm, tiny_reward_model, tiny_tokenizer  # noqa: E402

STEPS, LR, SEED = 3, 0.5, 5
# Adam's step is blind to the scale of the gradient (m / sqrt(v)): a bug that sums instead of
# averaging over processes would pass a weight comparison. With eps = 1 (far above these
# gradients' sqrt(v)) each step is about lr * m: proportional to the gradient, as SGD.
ADAM_EPS = 1.0


def loop_trainer(method, out, bs, gas, tok):
    from rlhfkit import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

    common = dict(output_dir=out, max_steps=STEPS, per_device_train_batch_size=bs, gradient_accumulation_steps=gas,
                  learning_rate=LR, adam_epsilon=ADAM_EPS, report_to="none", disable_tqdm=True, seed=SEED,
                  max_grad_norm=1.0)
    if method == "sft":
        rows = [{"prompt": f"p{i % 7} x" + " y" * (i % 3), "completion": " y z."} for i in range(32)]
        return SFTTrainer(model=tiny_causal_lm("gpt2", tok, hidden_size=32), args=SFTConfig(**common),
                          train_dataset=rows, processing_class=tok)
    if method == "reward":
        return RewardTrainer(model=tiny_reward_model("gpt2", tok, hidden_size=32),
                             args=RewardConfig(max_length=64, **common), train_dataset=hidden_rule_preferences(32, 0),
                             processing_class=tok)
    if method == "dpo":
        return DPOTrainer(model=tiny_causal_lm("gpt2", tok, hidden_size=32), args=DPOConfig(max_length=64, **common),
                          train_dataset=hidden_rule_preferences(32, 0), processing_class=tok)
    raise SystemExit(f"unknown method {method!r}")


class ScriptedEngine:
    """A rollout engine whose completions are a fixed function of the prompt and of the completion's place
    in its group: the same rows on one process or two, whatever each rank's RNG (sampling from the model
    could not be: one batch of 8 draws other random numbers than two of 4). The completions of a group
    differ, so group-relative advantages are not zero and the weights move."""

    def __init__(self, eos: int, group: int):
        self.eos, self.group = eos, group

    def generate(self, prompt_ids, settings):
        from rlhfkit.rollout.vllm import EngineRollout

        responses = []
        for i, ids in enumerate(prompt_ids):  # a group's G copies are consecutive, whole groups per rank
            k, base = i % self.group, sum(ids)
            responses.append(torch.tensor([10 + (base * 7 + k * 29 + j * 11) % 150 for j in range(3)] + [self.eos]))
        return EngineRollout(responses, [torch.zeros(len(r)) for r in responses])

    def sync_weights(self, model):
        pass


def low_tokens(prompts, completions, completion_ids, **_):
    """Reward: the share of completion tokens below 80 (deterministic, differs within a group)."""
    return [sum(t < 80 for t in ids) / len(ids) for ids in completion_ids]


def online_trainer(method, out, bs, gas, tok):
    """GRPO or RLOO: one process with ``bs=8`` and two with ``bs=4`` draw the same 2 prompts per
    generation (every rank takes whole groups of G=4) and take one optimiser step on the same 8 rows."""
    from rlhfkit import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    common = dict(output_dir=out, max_steps=STEPS, per_device_train_batch_size=bs, gradient_accumulation_steps=gas,
                  learning_rate=LR, adam_epsilon=ADAM_EPS, report_to="none", disable_tqdm=True, seed=SEED,
                  max_grad_norm=1.0, num_generations=4, max_completion_length=4)
    prompts = [{"prompt": f"p{i} x" + " y" * (i % 3)} for i in range(8)]
    model = tiny_causal_lm("gpt2", tok, hidden_size=32)
    engine = ScriptedEngine(tok.eos_token_id, 4)
    if method == "grpo":
        args = GRPOConfig(vllm_importance_sampling_correction=False, **common)
        return GRPOTrainer(model=model, reward_funcs=low_tokens, args=args, train_dataset=prompts,
                           processing_class=tok, rollout_engine=engine)
    return RLOOTrainer(model=model, reward_funcs=low_tokens, args=RLOOConfig(**common), train_dataset=prompts,
                       processing_class=tok, rollout_engine=engine)


def run_ppo(method, out, bs, gas, tok):
    """Classic PPO steps on fixed rollouts. Each rank takes its slice of one global batch of
    ``bs * processes`` rows, in minibatches of ``bs // gas``: 1 process with bs=8 and 2
    processes with bs=4 (gas=1) take one optimiser step per ``step()`` over the same 8 rows.
    Responses have one length and advantages are not whitened: both are per-process
    statistics (masked means over a minibatch, whitening over a local batch, as TRL 0.11),
    and with them on, 2 processes are not one process with a bigger batch. Under FSDP2 and DeepSpeed a
    separate critic gets an optimiser of its own (one Adam over both models elsewhere: the same updates)."""
    from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
    from rlhfkit.models import CriticModel

    model = AutoModelForCausalLMWithValueHead(tiny_causal_lm("gpt2", tok, hidden_size=32))
    critic = CriticModel(tiny_reward_model("gpt2", tok, hidden_size=32, seed=1)) if method == "ppo_critic" else None
    cfg = PPOConfig(batch_size=bs, mini_batch_size=bs // gas, gradient_accumulation_steps=gas, ppo_epochs=1,
                    learning_rate=LR, seed=SEED, max_grad_norm=1.0, adap_kl_ctrl=False, init_kl_coef=0.1,
                    whiten_advantages=False)
    params = [p for m in (model, critic) if m is not None for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=LR, eps=ADAM_EPS)
    sharded = any(os.environ.get(f"ACCELERATE_USE_{kind}", "false") == "true" for kind in ("FSDP", "DEEPSPEED"))
    if critic is not None and sharded:  # prepared apart there, each model with its own optimiser
        optimizer = (torch.optim.Adam(model.parameters(), lr=LR, eps=ADAM_EPS),
                     torch.optim.Adam(critic.parameters(), lr=LR, eps=ADAM_EPS))
    trainer = PPOTrainer(cfg, model, tokenizer=tok, optimizer=optimizer, critic=critic)
    world, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
    gen = torch.Generator().manual_seed(1)
    total = bs * world
    queries = [torch.randint(10, 200, (4 + i % 3,), generator=gen) for i in range(total)]
    responses = [torch.randint(10, 200, (6,), generator=gen) for _ in range(total)]
    scores = [torch.randn((), generator=gen) for _ in range(total)]
    mine = slice(rank * bs, (rank + 1) * bs)
    for _ in range(STEPS):
        trainer.step(queries[mine], responses[mine], scores[mine])
    from safetensors.torch import save_file

    weights = {}
    for prefix, module in (("policy.", trainer._train_model), ("critic.", trainer._train_critic)):
        if module is not None:
            state = trainer.mechanics.full_state_dict(module)  # None: not sharded, every rank has it whole
            state = state if state is not None else trainer.accelerator.unwrap_model(module).state_dict()
            weights.update({prefix + k: v.detach().cpu().clone() for k, v in state.items()})
    if trainer.accelerator.is_main_process:
        os.makedirs(out, exist_ok=True)
        save_file(weights, os.path.join(out, "weights.safetensors"))
    if "--no-save" not in sys.argv:
        trainer.save_pretrained(out)
    return trainer


def main():
    method, out, bs, gas = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tok = tiny_tokenizer()
    if method.startswith("ppo"):
        trainer = run_ppo(method, out, bs, gas, tok)
        accelerator, model = trainer.accelerator, trainer._train_model
    else:
        build = online_trainer if method in ("grpo", "rloo") else loop_trainer
        trainer = build(method, out, bs, gas, tok)
        trainer.train()
        accelerator, model = trainer.loop.accelerator, trainer.loop.model
    if accelerator.is_main_process:
        world = {"distributed_type": str(accelerator.distributed_type).split(".")[-1],
                 "num_processes": accelerator.num_processes, "model_class": type(model).__name__}
        with open(os.path.join(out, "world.json"), "w") as fh:
            json.dump(world, fh)


if __name__ == "__main__":
    main()
