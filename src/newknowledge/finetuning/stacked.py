"""R copies of the GPT-2 model with stacked weights: one forward pass, one AdamW step for all.

The fine-tuning grid (paper Sec. 4: D with X% Unknown, D_Known, several seeds)
is many copies of one small model, each fine-tuned on its own data.  On a CPU a
single run is bound by per-operation overhead (batches of 16 short questions,
128-wide matrices), so :mod:`newknowledge.finetuning.grouped` trains R runs as one model
whose weights are stacked along a leading run axis: every linear layer is one
``torch.baddbmm`` of shape (R, rows, d_in) x (R, d_in, d_out) instead of R
small ``addmm``, and the optimizer updates (R, ...) tensors.

This module is that model: the GPT-2 forward pass of Hugging Face's
``GPT2LMHeadModel`` (the controlled world's model,
:func:`newknowledge.model.pretrain.make_model`) written over stacked weights, the
AdamW update with one step count per run, each run's state in the per-run
checkpoint format, and dropout masks that belong to a run.  Results equal the
per-run model's up to float rounding: the same operations, grouped differently.
Every other architecture takes the per-run path.  (``torch.func.vmap`` over
``functional_call`` of the Hugging Face model itself would be shorter, but it
fails there: the model's mask creation branches on tensor values.)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def supports(config) -> bool:
    """Whether :class:`Stack` computes what Hugging Face does for a model with this config."""
    return (
        getattr(config, "model_type", "") == "gpt2"
        and config.activation_function == "gelu_new"
        and config.scale_attn_weights
        and not config.scale_attn_by_inverse_layer_idx
        and not config.reorder_and_upcast_attn
        and config.tie_word_embeddings
    )


class Stack:
    """R copies of a GPT-2 model with stacked weights, each with its own AdamW state.

    Attributes:
        params: Hugging Face parameter name -> leaf tensor of shape (R, *shape)
            (the tied output layer is ``transformer.wte.weight``).
        exp_avg, exp_avg_sq: AdamW moments, same keys and shapes.
        steps: long tensor of shape (R,): optimizer steps each run has taken.
    """

    def __init__(
        self,
        model,
        runs: int,
        lr: float,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        if not supports(model.config):
            raise ValueError(f"grouped training supports GPT-2 models only, not {model.config.model_type}")
        cfg = model.config
        self.heads, self.ln_eps, self.layers = cfg.n_head, cfg.layer_norm_epsilon, cfg.n_layer
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        # The optimizer's parameter order (model.parameters(), the tied head once): AdamW's
        # state_dict numbers parameters in this order.
        self.names = [n for n, _ in model.named_parameters()]
        self.params = {
            n: p.detach().expand(runs, *p.shape).clone().requires_grad_() for n, p in model.named_parameters()
        }
        self.exp_avg = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.steps = torch.zeros(runs, dtype=torch.long)

    # -- forward -----------------------------------------------------------------------------------------------------
    def hidden(
        self,
        ids: torch.Tensor,
        runs: torch.Tensor | None = None,
        drop: list | None = None,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states (after ``ln_f``) of right-padded rows.

        Args:
            ids: long tensor of shape (A, B, T): row ``b`` of run ``runs[a]``; pads
                only at the end of a row (causal attention alone then gives every
                real token what the attention mask gives it in Hugging Face).
            runs: the A runs (all R when None).
            drop: optional per-site dropout masks from :class:`Dropout` (training only).
            prefix: optional long tensor of shape (A, L): tokens that every row of
                run ``a`` continues (``ids`` then start at position L).  Their keys
                and values are computed once and shared by the B rows, as
                :mod:`newknowledge.model.engine` shares SliCK's exemplar lines.

        Returns:
            Tensor of shape (A, B, T, d).
        """
        P = self._pick(runs)
        past = None if prefix is None else self._blocks(P, prefix[:, None], collect=True)[1]
        x, _ = self._blocks(P, ids, drop, past)
        return self._ln(x, P["transformer.ln_f.weight"], P["transformer.ln_f.bias"])

    def _blocks(
        self, P: dict, ids: torch.Tensor, drop: list | None = None, past: list | None = None, collect: bool = False
    ) -> tuple[torch.Tensor, list]:
        """The embeddings and transformer blocks: (A, B, T, d) states, and each layer's (keys, values) if ``collect``.

        ``past`` holds per layer the keys and values of a prefix, each of shape
        (A, heads, L, hd), attended to by every row (positions then start at L).
        """
        A, B, T = ids.shape
        L = 0 if past is None else past[0][0].shape[2]
        wte = P["transformer.wte.weight"]  # (A, V, d)
        V, d = wte.shape[1:]
        # One embedding lookup for all runs: run a's table starts at row a * V of the flattened tables.
        x = F.embedding(ids + V * torch.arange(A)[:, None, None], wte.reshape(A * V, d))
        x = x + P["transformer.wpe.weight"][:, None, L : L + T]  # positions L..L+T-1, as HF's default ids
        x = _drop(x, drop, 0)
        hd, kv = d // self.heads, []
        for i in range(self.layers):
            g = lambda name: P[f"transformer.h.{i}.{name}"]  # noqa: E731, B023 (called within the iteration)
            h = _linear(self._ln(x, g("ln_1.weight"), g("ln_1.bias")), g("attn.c_attn.weight"), g("attn.c_attn.bias"))
            q, k, v = h.view(A * B, T, 3, self.heads, hd).permute(2, 0, 3, 1, 4)  # each (A*B, heads, T, hd)
            if collect:
                kv.append((k, v))
            if past is not None:  # every row sees the whole prefix, and its own tokens causally
                pk, pv = (t[:, None].expand(-1, B, -1, -1, -1).reshape(A * B, self.heads, L, hd) for t in past[i])
                see = torch.cat([torch.ones(T, L, dtype=torch.bool), torch.ones(T, T, dtype=torch.bool).tril()], 1)
                a = F.scaled_dot_product_attention(q, torch.cat([pk, k], 2), torch.cat([pv, v], 2), attn_mask=see)
            elif drop is None:
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:  # attention dropout needs the probabilities themselves
                w = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
                w = w.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
                a = _drop(w.view(A, B, self.heads, T, T), drop, 1 + 3 * i).view(A * B, self.heads, T, T) @ v
            a = a.transpose(1, 2).reshape(A, B, T, d)
            x = x + _drop(_linear(a, g("attn.c_proj.weight"), g("attn.c_proj.bias")), drop, 2 + 3 * i)
            h = _linear(self._ln(x, g("ln_2.weight"), g("ln_2.bias")), g("mlp.c_fc.weight"), g("mlp.c_fc.bias"))
            h = F.gelu(h, approximate="tanh")  # HF's gelu_new, fused
            x = x + _drop(_linear(h, g("mlp.c_proj.weight"), g("mlp.c_proj.bias")), drop, 3 + 3 * i)
        return x, kv

    def _pick(self, runs: torch.Tensor | None, names=None) -> dict[str, torch.Tensor]:
        """The parameters ``names`` (default all) of ``runs``: a copy tracked by autograd, or as they are for all runs."""
        names = self.names if names is None else names
        if runs is None or torch.equal(runs, torch.arange(len(self.steps))):
            return {n: self.params[n] for n in names}
        return {n: self.params[n][runs] for n in names}

    def _ln(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # Per-run affine after a shared normalisation: w, b of shape (A, d) broadcast over (A, B, T, d).
        return F.layer_norm(x, x.shape[-1:], eps=self.ln_eps) * w[:, None, None] + b[:, None, None]

    def logits_at(self, h: torch.Tensor, pos: torch.Tensor, runs: torch.Tensor | None = None) -> torch.Tensor:
        """Output logits at chosen positions only (the tied output layer is the largest matrix).

        Args:
            h: hidden states of shape (A, B, T, d); pos: long tensor of shape
                (A, N): flat indices ``b * T + t`` into each run's rows.

        Returns:
            Tensor of shape (A, N, vocab).
        """
        wte = self._pick(runs, ["transformer.wte.weight"])["transformer.wte.weight"]
        A, B, T, d = h.shape
        picked = h.reshape(A, B * T, d).gather(1, pos[..., None].expand(-1, -1, d))
        return torch.bmm(picked, wte.transpose(1, 2))

    # -- optimizer ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def adamw_step(self, runs: torch.Tensor) -> None:
        """``torch.optim.AdamW.step`` (single-tensor CPU path, same operations in the same order) for ``runs`` only.

        Bias corrections use each run's own step count, so a run that skipped
        steps (a smaller data set) is updated as it would be alone.
        """
        self.steps[runs] += 1
        b1, b2 = self.betas
        step = self.steps[runs].double()
        shape = (-1,)
        # Python floats in torch's code: computed here in float64, rounded to float32 where torch
        # passes them to a float32 kernel.
        step_size = (self.lr / (1 - b1**step)).float()
        bc2_sqrt = ((1 - b2**step) ** 0.5).float()
        everyone = len(runs) == len(self.steps)
        for n, p in self.params.items():
            view = (lambda t: t) if everyone else (lambda t: t[runs])  # noqa: E731
            param, grad, m, v = view(p.data), view(p.grad), view(self.exp_avg[n]), view(self.exp_avg_sq[n])
            per_run = shape + (1,) * (p.dim() - 1)
            if self.weight_decay != 0:
                param.mul_(1 - self.lr * self.weight_decay)
            m.lerp_(grad, 1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (v.sqrt() / bc2_sqrt.view(per_run)).add_(self.eps)
            # addcdiv(value=-s) computes param + (-s * m) / denom.
            param.add_((-step_size.view(per_run)) * m / denom)
            if not everyone:  # advanced indexing copied: write back
                p.data[runs], self.exp_avg[n][runs], self.exp_avg_sq[n][runs] = param, m, v
        for p in self.params.values():
            p.grad = None

    # -- per-run state, in the per-run path's checkpoint format ---------------------------------------------------
    def run_state(self, r: int, template: dict) -> tuple[dict, dict]:
        """Run ``r``'s ``(model state, optimizer state_dict)`` as :func:`newknowledge.finetuning.finetune.train_run` saves them.

        Args:
            template: a ``torch.optim.AdamW(...).state_dict()`` over the same
                parameters (its ``param_groups`` are copied).
        """
        model = {n: self.params[n][r].detach().clone() for n in self.names}
        state = (
            {
                i: {
                    "step": torch.tensor(float(self.steps[r]), dtype=torch.float32),
                    "exp_avg": self.exp_avg[n][r].clone(),
                    "exp_avg_sq": self.exp_avg_sq[n][r].clone(),
                }
                for i, n in enumerate(self.names)
            }
            if self.steps[r] > 0
            else {}
        )
        return model, {"state": state, "param_groups": template["param_groups"]}

    @torch.no_grad()
    def load_run_state(self, r: int, model: dict, opt: dict) -> None:
        """Restore run ``r`` from a checkpoint of either path."""
        lost = sorted(set(self.names) - set(model))
        if lost:
            raise RuntimeError(f"checkpoint does not match the model: missing {lost[:5]}")
        for i, n in enumerate(self.names):
            self.params[n][r] = model[n]
            st = opt["state"].get(i, opt["state"].get(str(i)))
            if st:
                self.exp_avg[n][r], self.exp_avg_sq[n][r] = st["exp_avg"], st["exp_avg_sq"]
                self.steps[r] = int(st["step"])


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """HF's ``Conv1D`` (``x @ w + b``) per run: x (A, ..., d_in), w (A, d_in, d_out), b (A, d_out)."""
    A = x.shape[0]
    y = torch.baddbmm(b[:, None], x.reshape(A, -1, x.shape[-1]), w)
    return y.view(*x.shape[:-1], w.shape[-1])


def _drop(x: torch.Tensor, drop: list | None, site: int) -> torch.Tensor:
    return x if drop is None else x * drop[site]


class Dropout:
    """Dropout masks that depend on nothing but the run: reproducible, resumable, independent of the group.

    Each run draws from its own generator, seeded by (seed, epoch) as the
    per-run path seeds torch's (App. E's dropout, ``ft_dropout``), for its own
    batch's shape (its rows and width), and the masks are then padded to the
    group's shape; so a run's masks do not change with its companions, and an
    epoch replayed after a resume draws the same ones.  They are not the masks
    Hugging Face's dropout layers draw on the per-run path (other sites' order,
    attention dropout outside the fused kernel), so with dropout the two paths
    agree in distribution only, as two dropout seeds do.
    """

    def __init__(self, p: float, runs: list[int], seeds: list[int], epochs: list[int]):
        """Args:
        p: the dropout probability; runs: stack indices, each with its seed and epoch.
        """
        self.p = p
        self.gens = {
            r: torch.Generator().manual_seed(int(np.random.default_rng([s, e, 1]).integers(2**62)))
            for r, s, e in zip(runs, seeds, epochs)
        }

    def masks(
        self, runs: list[int], shapes: list[tuple[int, int]], out: tuple[int, int], d: int, heads: int, layers: int
    ) -> list[torch.Tensor]:
        """Scaled keep-masks for one step.

        Args:
            runs: the runs (stack indices) with a batch this step; shapes:
                each one's (rows, width); out: the group's (B, T).

        Returns:
            One tensor per site (embeddings, then per layer: attention
            probabilities, attention output, MLP output), of shape
            (A, B, T, d) or (A, B, heads, T, T) for the attention sites.
        """
        B, T = out
        sites = [(d,)] + [(heads, "T"), (d,), (d,)] * layers
        full = [torch.zeros(len(runs), B, *((heads, T, T) if s[-1] == "T" else (T, d))) for s in sites]
        for a, (r, (b, t)) in enumerate(zip(runs, shapes)):
            for k, s in enumerate(sites):
                shape = (b, heads, t, t) if s[-1] == "T" else (b, t, d)
                keep = (torch.rand(shape, generator=self.gens[r]) >= self.p).float() / (1 - self.p)
                full[k][(a, slice(0, b)) + tuple(slice(0, n) for n in shape[1:])] = keep
        return full
