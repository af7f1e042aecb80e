"""Masked statistics and running moments.

Every PPO quantity lives on a (B, T) grid where only response tokens count, so the
statistics here take a ``mask`` of the same shape (1 = counts, 0 = padding or prompt).
Semantics follow Hugging Face TRL 0.11.4 (``trl/core.py`` and ``trl/trainer/utils.py``)
bit for bit where TRL is defined; the fixes for its degenerate cases are marked
"Deliberate fix" below.

The caller must not pass an empty mask (no valid element): the statistics are then
0 / 0 = NaN. They never raise, because checking would need a device sync.
"""

from __future__ import annotations

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of the valid elements: ``sum(values * mask)`` over ``dim`` (all when None).

    Shapes: values, mask (B, T) (any shape, broadcastable) -> () or reduced over ``dim``.
    """
    if dim is None:
        return (values * mask).sum()
    return (values * mask).sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of the valid elements: ``sum(values * mask) / sum(mask)``.

    Shapes: values, mask (B, T) -> () when ``dim`` is None, else reduced over ``dim``.
    Source: TRL 0.11.4 ``trl.core.masked_mean`` (same formula, same float order).
    """
    if dim is None:
        return (values * mask).sum() / mask.sum()
    return (values * mask).sum(dim) / mask.sum(dim)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the valid elements (over all dimensions).

        mean = masked_mean(values, mask)
        var  = masked_mean((values - mean)**2, mask)        # biased
        var *= n / (n - 1)   with n = sum(mask)             # if unbiased (Bessel)

    Shapes: values, mask (B, T) -> ().
    Source: TRL 0.11.4 ``trl.core.masked_var``; identical for n >= 2 (more precisely n > 1).
    Deliberate fix: for n <= 1 no Bessel correction is applied, so one valid element
    gives variance 0 where TRL divides by zero (NaN for a batch of one single-token
    response). TRL raises on n == 0; here it returns NaN instead (no device sync).
    """
    mean = masked_mean(values, mask)  # ()
    variance = masked_mean((values - mean) ** 2, mask)  # ()
    if unbiased:
        n = mask.sum()  # ()
        # torch.where instead of a Python `if` on a tensor: no .item(), no sync.
        bessel = n / torch.where(n > 1, n - 1, n)  # () ; n <= 1 -> n / n = 1
        variance = variance * bessel
    return variance


WHITEN_EPS = ("var", "floor", "std")


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor | None, shift_mean: bool = True, eps: float = 1e-8, *,
    unbiased: bool = True, eps_at: str = "var", pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """Normalise to zero mean and unit variance over the valid elements.

        whitened = (values - mean) * rsqrt(var + eps)       eps_at="var"   (TRL 0.11.4 PPO)
        whitened = (values - mean) * rsqrt(max(var, eps))   eps_at="floor" (OpenRLHF REINFORCE++)
        whitened = (values - mean) / (std + eps)            eps_at="std"   (TRL 1.x RLOO)
        whitened += mean                                    if not shift_mean

    mean and var are those of the valid elements (``masked_mean``, ``masked_var``; ``unbiased``:
    Bessel's correction, std = sqrt(var)). ``mask=None``: every element counts and the
    statistics are ``torch.mean`` / ``torch.var`` / ``torch.std`` of ``pool`` (default ``values``),
    e.g. the advantages of every process, gathered, applied to this process's ``values``.
    Shapes: values, mask (B, T) (any shape; pool any shape) -> values' shape. Padding positions
    are transformed too (callers mask them later), exactly as in TRL.
    Sources: TRL 0.11.4 ``trl.core.masked_whiten`` (eps fixed at 1e-8 there); OpenRLHF
    ``compute_advantages_and_returns`` (``var.clamp(min=1e-8).rsqrt()``, biased variance); TRL 1.x
    ``RLOOTrainer`` (``normalize_advantages``: ``(adv - mean) / (std + 1e-4)``).
    """
    if eps_at not in WHITEN_EPS:
        raise ValueError(f"eps_at must be one of {WHITEN_EPS}, got {eps_at!r}")
    if mask is None:
        source = values if pool is None else pool
        mean = source.mean()  # ()
        spread = source.std(unbiased=unbiased) if eps_at == "std" else source.var(unbiased=unbiased)  # ()
    else:
        if pool is not None:
            raise ValueError("pool (statistics of other values) is for mask=None; with a mask the statistics "
                             "are the masked values'")
        mean, spread = masked_mean(values, mask), masked_var(values, mask, unbiased=unbiased)  # (), ()
        if eps_at == "std":
            spread = spread.sqrt()
    centred = values - mean
    if eps_at == "var":
        whitened = centred * torch.rsqrt(spread + eps)
    elif eps_at == "floor":
        whitened = centred * spread.clamp(min=eps).rsqrt()
    else:
        whitened = centred / (spread + eps)
    if not shift_mean:
        # shift_mean=False keeps the mean: PPO whitens rewards this way so their sign survives.
        whitened = whitened + mean
    return whitened


class RunningMoments:
    """Running mean and standard deviation of a stream of scores (for score scaling).

    Parallel (Chan et al. 1979) update of the moments with a new batch ``xs`` of n
    elements, batch mean m_b and biased batch variance v_b:

        delta   = m_b - mean
        tot     = count + n
        mean   += delta * n / tot
        var     = (var * count + delta**2 * count * n / tot + v_b * n) / tot
        std     = sqrt(var * tot / (tot - 1))                       # unbiased
        count   = tot

    The state starts at mean 0, var 1, std 1, count 1e-24 (a near-zero prior, so the
    first batch's moments replace it). State is held as float64 0-dim CPU tensors.
    Source: TRL 0.11.4 ``trl.trainer.utils.RunningMoments`` (from MOSS-RLHF), which
    does the same arithmetic in float32 tensors mixed with Python floats.

    Deliberate fixes: the returned batch std of a one-element batch is 0 (TRL: NaN);
    the running std keeps its previous value while fewer than two elements have been
    seen in total (TRL: inf when the first batch has one element).
    """

    def __init__(self) -> None:
        f64 = dict(dtype=torch.float64)
        self.mean = torch.tensor(0.0, **f64)
        self.var = torch.tensor(1.0, **f64)
        self.std = torch.tensor(1.0, **f64)
        self.count = torch.tensor(1e-24, **f64)

    @torch.no_grad()
    def update(self, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold a batch of scores in; return its (mean, unbiased std) as float32 tensors.

        Shapes: xs any shape (usually (B,)) -> ((), ()) on xs's device.
        """
        xs_var, xs_mean = torch.var_mean(xs.detach().float(), unbiased=False)  # (), ()
        return self.update_from_moments(xs_mean, xs_var, xs.numel())

    @torch.no_grad()
    def update_from_moments(
        self, xs_mean: torch.Tensor, xs_var: torch.Tensor, xs_count: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as ``update`` from a batch's mean, biased variance and element count.

        Distributed callers all-reduce these three across ranks (as TRL's
        ``get_global_statistics`` does) and pass the global values here.
        """
        n = torch.as_tensor(xs_count, dtype=torch.float64).cpu()  # ()
        m_b = xs_mean.detach().to("cpu", torch.float64)  # ()
        v_b = xs_var.detach().to("cpu", torch.float64)  # ()

        delta = m_b - self.mean
        tot = self.count + n
        new_sum = v_b * n
        # the old sum of squares, corrected for the shift of the mean
        old_sum = self.var * self.count + delta**2 * self.count * n / tot
        new_var = (old_sum + new_sum) / tot
        self.mean = self.mean + delta * n / tot
        # tot <= 1 (first batch of one element): the unbiased std is undefined; keep the old one.
        self.std = torch.where(tot > 1, (new_var * tot / (tot - 1)).sqrt(), self.std)
        self.var = new_var
        self.count = tot

        # Bessel-corrected batch std; a one-element batch has v_b = 0 and gives 0, not NaN.
        n_b = torch.as_tensor(xs_count, dtype=xs_var.dtype, device=xs_var.device)  # ()
        batch_std = (xs_var * n_b / (n_b - 1).clamp_min(1)).sqrt()  # ()
        return xs_mean.detach().float(), batch_std.detach().float()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The four moments as float64 0-dim tensors (for checkpoints)."""
        return {k: getattr(self, k).clone() for k in ("mean", "var", "std", "count")}

    def load_state_dict(self, state: dict) -> None:
        """Restore from ``state_dict()`` output (tensors or plain floats)."""
        for k in ("mean", "var", "std", "count"):
            setattr(self, k, torch.as_tensor(state[k], dtype=torch.float64).cpu().clone())
