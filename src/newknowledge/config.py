"""Stage configurations, named profiles and notebook parameters.

One frozen dataclass per stage (world, pretraining, SliCK, fine-tuning), with
commented defaults.  Every field has a *unique flat name*, so a profile
(``profiles/<name>.yaml``) and a notebook's papermill ``parameters`` cell are
both plain ``name: value`` lists, and :func:`from_params` routes each name to
its stage.  Unknown names and wrong types fail loudly (papermill only warns).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES_DIR = REPO_ROOT / "profiles"


class ConfigError(ValueError):
    """A bad profile or parameter: the message names the value and the fix."""


@dataclass(frozen=True)
class WorldConfig:
    """The controlled world of facts (see :mod:`newknowledge.world`)."""

    world_seed: int = 0  # seeds names, answers, splits and exposure counts
    n_train: int = 220  # train facts per in-distribution relation
    n_dev: int = 20  # dev facts (few-shot exemplars) per in-distribution relation
    n_test: int = 60  # test facts per in-distribution relation
    n_ood_test: int = 60  # test facts per out-of-distribution relation
    never_exposed: float = 1 / 3  # share of non-dev facts absent from pretraining
    exposure_mu: float = 1.2  # lognormal mu of exposure counts (exposed facts)
    exposure_sigma: float = 1.3  # lognormal sigma of exposure counts
    exposure_cap: int = 100  # maximum exposures of one fact
    dev_min_exposures: int = 15  # dev exemplars are well known: 15..25 exposures
    dev_max_exposures: int = 25
    zipf_a: float = 1.0  # answer popularity within a relation's object pool
    pool_scale: float = 1.0  # multiplies every relation's object-pool size


@dataclass(frozen=True)
class PretrainConfig:
    """From-scratch pretraining of the controlled world's model."""

    pretrain_seed: int = 0  # corpus shuffling, initialisation and batch order
    statement_share: float = 0.7  # share of exposures written as statements (rest Q/A lines)
    verify_share: float = 0.1  # extra verification line ("Check: ... Verdict: True/False") per exposure, for P(True)
    vocab_size: int = 2048  # byte-level BPE vocabulary
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    block_size: int = 128  # packed training blocks (tokens)
    pretrain_batch: int = 32
    pretrain_lr: float = 3e-3  # peak learning rate (warm-up, then cosine decay)
    pretrain_warmup: float = 0.05  # share of steps spent warming up
    pretrain_passes: float = 14.0  # passes over the corpus
    pretrain_threads: int = 2  # torch threads while pretraining


@dataclass(frozen=True)
class SlickConfig:
    """SliCK (paper Sec. 3): few-shot prompts, greedy and sampled answers."""

    slick_seed: int = 0  # exemplar draws and sampling
    n_ex: int = 10  # random exemplar sets (prompts) per question
    k_shot: int = 4  # exemplars per prompt, from dev, same relation
    n_samples: int = 16  # sampled answers per prompt
    temperature: float = 0.5  # sampling temperature for P_correct(T>0)
    top_k: int = 40  # sampling from the top-k tokens
    max_new_tokens: int = 16  # answers are cut at the end of the line
    estimator: str = "sampling"  # "sampling" (the paper's) or "exact" (see slick.py)
    slick_batch: int = 64  # prompts per forward pass (0 = from free GPU memory)
    compare_n: int = 200  # chapter 6: test questions categorised by both estimators; 0 = auto (free GPU memory; 64 on CPU)


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning (paper Sec. 4): zero-shot QA, loss on the answer only."""

    ft_format: str = "qa"  # prompt format, see finetune.FORMATS
    alt_format: str = "unseen"  # chapter 4 also fits the linear model in this format ("" = skip)
    ft_lr: float = 3e-5  # constant learning rate (AdamW)
    ft_batch: int = 16
    ft_epochs: int = 40  # CONVERGENCE = the last epoch
    ft_weight_decay: float = 0.0
    pct_unknown: list = field(default_factory=lambda: [0, 25, 50, 75, 100])  # section-4 variants
    dataset_size: int = 0  # |D|; 0 = the paper's rule (sum of smallest categories)
    ft_eval: str = "teacher"  # "teacher" (one forward pass) or "generate"
    ft_eval_batch: int = 128  # questions per evaluation pass; 0 = auto (free GPU memory; 128 on CPU)
    ft_threads: int = 1  # torch threads per run (runs go side by side)
    workers: int = 2  # runs executed in parallel
    executor: str = "local"  # "local" (process pool) or "ray" (Ray tasks; pip install '.[ray]')
    ft_grouped: bool = True  # local CPU runs of a GPT-2 model trained together as one stacked model (grouped.py)
    ft_group_size: int = 0  # runs per group at most; 0 = the groupable runs split evenly over the workers
    lora_rank: int = 0  # 0 = full fine-tuning (the paper); >0 = LoRA via peft
    lora_alpha: int = 16
    lora_targets: str = ""  # comma-separated module names; "" = peft's default


@dataclass(frozen=True)
class StudyConfig:
    """Parameters that are not a single stage's."""

    profile: str = "quick"  # the profile these parameters came from
    seeds: list = field(default_factory=lambda: [0])  # fine-tuning seeds (variant draw, order)
    model: str = ""  # "" = pretrain the controlled world's model; else a path or HF model id
    eq_dir: str = ""  # "" = the synthetic world; else a real ENTITYQUESTIONS folder
    device: str = "auto"  # "auto", "cpu", "cuda", ...
    dtype: str = "auto"  # "auto" (bf16 on CUDA, fp32 on CPU), "float32", "bfloat16"


STAGES = (StudyConfig, WorldConfig, PretrainConfig, SlickConfig, FinetuneConfig)


@dataclass(frozen=True)
class Study:
    """All stage configs of one run of the book."""

    study: StudyConfig
    world: WorldConfig
    pretrain: PretrainConfig
    slick: SlickConfig
    finetune: FinetuneConfig

    def params(self) -> dict[str, Any]:
        """The flat ``name: value`` view (what a profile or papermill holds)."""
        out: dict[str, Any] = {}
        for stage in (self.study, self.world, self.pretrain, self.slick, self.finetune):
            out.update(dataclasses.asdict(stage))
        return out


def parameter_fields() -> dict[str, tuple[type, dataclasses.Field]]:
    """Map every flat parameter name to (its stage dataclass, its field)."""
    out: dict[str, tuple[type, dataclasses.Field]] = {}
    for stage in STAGES:
        for f in fields(stage):
            assert f.name not in out, f"parameter {f.name} defined twice"
            out[f.name] = (stage, f)
    return out


def _check_type(name: str, value: Any, f: dataclasses.Field) -> Any:
    want = {"int": int, "float": float, "str": str, "bool": bool, "list": list}[
        f.type if isinstance(f.type, str) else f.type.__name__
    ]
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is list and isinstance(value, tuple):
        return list(value)
    if isinstance(value, bool) and want is not bool:
        ok = False
    else:
        ok = isinstance(value, want)
    if not ok:
        raise ConfigError(
            f"parameter '{name}' must be {want.__name__}, got {type(value).__name__} {value!r}; "
            f"fix the profile or the papermill -p value"
        )
    return value


def from_params(params: dict[str, Any]) -> Study:
    """Build every stage config from flat parameters; unknown names fail loudly.

    Args:
        params: ``name -> value`` (a profile's contents, papermill parameters).

    Returns:
        A :class:`Study`; names not given keep their defaults.
    """
    known = parameter_fields()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {unknown}; known parameters are: {', '.join(sorted(known))}"
        )
    per_stage: dict[type, dict[str, Any]] = {s: {} for s in STAGES}
    for name, value in params.items():
        stage, f = known[name]
        per_stage[stage][name] = _check_type(name, value, f)
    built = [stage(**per_stage[stage]) for stage in STAGES]
    study = Study(*built)
    _validate(study)
    return study


def _validate(s: Study) -> None:
    if s.slick.estimator not in ("sampling", "exact"):
        raise ConfigError(f"estimator must be 'sampling' or 'exact', got {s.slick.estimator!r}")
    from .finetune import FORMATS

    for name in ("ft_format", "alt_format"):
        value = getattr(s.finetune, name)
        if value not in FORMATS and not (name == "alt_format" and value == ""):
            raise ConfigError(f"{name} must be one of {sorted(FORMATS)}, got {value!r}")
    if s.finetune.ft_eval not in ("teacher", "generate"):
        raise ConfigError(f"ft_eval must be 'teacher' or 'generate', got {s.finetune.ft_eval!r}")
    if s.finetune.executor not in ("local", "ray"):
        raise ConfigError(f"executor must be 'local' or 'ray', got {s.finetune.executor!r}")
    if s.finetune.ft_group_size < 0:
        raise ConfigError(f"ft_group_size must be >= 0 (0 = no limit), got {s.finetune.ft_group_size}")
    if not s.study.seeds:
        raise ConfigError("seeds must list at least one seed")


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict[str, Any]:
    """Read ``profiles/<name>.yaml`` (flat parameters) and check its names."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(
            f"unknown profile {name!r}: no file {path.name} in profiles/; "
            f"available: {', '.join(available_profiles())}"
        )
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: a profile must be a mapping of parameter: value")
    try:
        from_params(params)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return params


_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def from_namespace(namespace: dict[str, Any]) -> Study:
    """Build the study from a notebook's globals (its parameters cell).

    Called right after the ``parameters`` cell: every global that is not
    IPython's own, private or a module must be a known parameter, so a mistyped
    ``papermill -p`` name fails here instead of being silently ignored.  The
    values are the parameters (papermill's ``-f profiles/NAME.yaml`` injects a
    whole profile); a value that differs from the named profile is reported.
    """
    given = {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_") and k not in _IPYTHON_NAMES and not isinstance(v, types.ModuleType)
    }
    study = from_params(given)
    profile = load_profile(study.study.profile)
    differ = {k: given[k] for k, v in profile.items() if k in given and given[k] != v}
    if differ:
        print(f"note: these parameters differ from profile {study.study.profile!r}: {differ} "
              f"(to run a whole profile, pass papermill -f profiles/{study.study.profile}.yaml)")
    return study


def _field_comments() -> dict[str, str]:
    """The ``# comment`` after each field in this module's source (for notebooks)."""
    import inspect
    import re

    out = {}
    for stage in STAGES:
        for line in inspect.getsource(stage).splitlines():
            m = re.match(r"\s+(\w+): \w+ = .*?#\s*(.*)$", line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def parameters_cell(profile: str = "quick") -> str:
    """Source of a notebook's ``parameters`` cell: every parameter, typed and commented.

    Values are the profile's (``quick`` by default, what a notebook opened by
    hand runs); ``tools/sync_notebooks.py`` writes this into every notebook and
    a test checks that none has drifted.
    """
    params = from_params(load_profile(profile)).params()
    comments = _field_comments()
    lines = [f"# Parameters (profile {profile!r}); papermill -f profiles/NAME.yaml or -p NAME VALUE overrides them."]
    for stage in STAGES:
        lines.append(f"# {stage.__doc__.splitlines()[0]}")
        for f in fields(stage):
            note = f"  # {comments[f.name]}" if f.name in comments else ""
            lines.append(f"{f.name}: {f.type} = {params[f.name]!r}{note}")
    return "\n".join(lines)


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able config (dataclasses allowed)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
