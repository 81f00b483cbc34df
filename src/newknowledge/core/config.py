"""Stage configurations, named profiles and notebook parameters.

One frozen dataclass per stage (world, pretraining, SliCK, fine-tuning), with
commented defaults.  Every field has a *unique flat name*, so a profile
(``profiles/<name>.yaml`` inside the package) and a notebook's papermill ``parameters`` cell are
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

from newknowledge.core.prompts import FT_FORMATS, QA_TEMPLATES

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # newknowledge/ (this file is in core/)
# The profiles ship inside the package (package data), so an installed copy
# finds them as well as a source checkout does.
PROFILES_DIR = PACKAGE_DIR / "profiles"


def checkout_root() -> Path | None:
    """The source checkout the package is imported from (``pip install -e .``), or None.

    None for an installed copy (a wheel in site-packages): there is no
    repository around it, and paths that default to the checkout (the
    artifacts folder) fall back to the current directory instead.
    """
    root = PACKAGE_DIR.parents[1]
    if root / "src" / "newknowledge" == PACKAGE_DIR and (root / "pyproject.toml").is_file():
        return root
    return None


def profile_path(name: str) -> Path:
    """The YAML file of profile ``name`` (what ``papermill -f`` takes)."""
    return PROFILES_DIR / f"{name}.yaml"


def _shown(path: Path) -> str:
    """``path`` as a reader would type it: relative to the checkout when there is one."""
    root = checkout_root()
    return str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)


class ConfigError(ValueError):
    """A bad profile or parameter: the message names the value and the fix."""


@dataclass(frozen=True)
class WorldConfig:
    """The controlled world of facts (see :mod:`newknowledge.data.world`)."""

    world_seed: int = 0  # seeds names, answers, splits and exposure counts
    n_train: int = 220  # train facts per in-distribution relation
    n_dev: int = 40  # dev facts per relation: EARLY_STOP's split and SliCK's few-shot exemplars
    n_test: int = 60  # test facts per in-distribution relation
    n_ood_test: int = 60  # test facts per out-of-distribution relation
    never_exposed: float = 1 / 3  # share of non-dev facts absent from pretraining
    exposure_mu: float = 1.2  # lognormal mu of exposure counts (exposed facts)
    exposure_sigma: float = 1.3  # lognormal sigma of exposure counts
    exposure_cap: int = 100  # maximum exposures of one fact
    dev_exposures: str = "natural"  # "natural": dev drawn like train/test (the paper's); "uniform": dev_min..dev_max
    dev_min_exposures: int = 15  # dev_exposures "uniform" only: 15..25 exposures per dev fact
    dev_max_exposures: int = 25
    zipf_a: float = 0.8  # answer popularity in a relation's pool (0.8: popular answer 14% on test, research-log E1)
    pool_scale: float = 1.0  # multiplies every relation's object-pool size


@dataclass(frozen=True)
class PretrainConfig:
    """From-scratch pretraining of the controlled world's model."""

    pretrain_seed: int = 0  # corpus shuffling, initialisation and batch order
    statement_share: float = 0.7  # share of exposures written as statements (rest Q/A lines)
    qa_templates: int = 5  # Q/A line templates in the corpus (QA_TEMPLATES[:n]; the first is the probe's)
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
    slick_batch: int = 64  # prompts per forward pass (0: from the free GPU memory)
    compare_n: int = 200  # chapter 6: questions categorised by both estimators; 0: auto (64 on CPU)


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning (paper Sec. 4): zero-shot QA, loss on the answer only."""

    ft_format: str = "paper"  # prompt format, see prompts.FT_FORMATS ("paper": App. E, never in pretraining)
    alt_format: str = "qa"  # chapter 4's contrast: a format pretraining already taught ("" to skip)
    ft_lr: float = 1e-4  # constant learning rate (AdamW); 3e-5 leaves runs unconverged at 40 epochs (research-log E4)
    ft_dropout: float = 0.05  # dropout while fine-tuning (paper App. E: 0.05), seeded from (seed, epoch)
    ft_batch: int = 16
    ft_micro_batch: int = 0  # rows per forward pass (gradients accumulated to ft_batch); 0 for auto
    ft_precision: str = "model"  # "model" (the loaded dtype) or "bf16-mixed" (fp32 weights and AdamW with bf16 compute)
    ft_checkpointing: bool = False  # activation checkpointing (less memory, ~30% more compute)
    ft_epochs: int = 50  # CONVERGENCE is the last epoch (the paper's 50; 40 left 100% Unknown at 97% train accuracy)
    ft_weight_decay: float = 0.0
    pct_unknown: list = field(default_factory=lambda: [0, 25, 50, 75, 100])  # section-4 variants
    dataset_size: int = 0  # |D|; 0: the paper's rule (sum of smallest categories)
    section4_size: int = 0  # |D| of section 4's variants (unknown_X, known_X, idk_X); 0: dataset_size's |D|
    min_dataset_size: int = 100  # the smallest |D| the study accepts; below it the comparisons lose their meaning
    ft_eval: str = "teacher"  # "teacher" (one forward pass) or "generate"
    ft_eval_batch: int = 128  # questions per evaluation pass; 0: auto (free GPU memory; 128 on CPU)
    ft_threads: int = 1  # torch threads per run (runs go side by side)
    workers: int = 2  # runs executed in parallel
    executor: str = "local"  # "local" (process pool) or "ray" (Ray tasks; pip install '.[ray]')
    ft_grouped: bool = False  # local CPU runs of a GPT-2 model trained together as one stacked model (grouped.py)
    ft_group_size: int = 0  # runs per group at most; 0: the groupable runs split evenly over the workers
    lora_rank: int = 0  # 0: full fine-tuning (the paper); above 0: LoRA via peft, this rank
    lora_alpha: int = 16
    lora_targets: str = ""  # comma-separated module names; "": peft's default


@dataclass(frozen=True)
class StudyConfig:
    """Parameters that are not a single stage's."""

    profile: str = "quick"  # the profile these parameters came from
    seeds: list = field(default_factory=lambda: [0])  # fine-tuning seeds (variant draw, order)
    model: str = ""  # "": pretrain the controlled world's model; else a local folder or a Hugging Face id
    eq_dir: str = ""  # "": the synthetic world; else a real ENTITYQUESTIONS folder
    device: str = "auto"  # "auto", "cpu", "cuda", ...
    dtype: str = "auto"  # "auto" (bf16 on CUDA, fp32 on CPU), "float32", "bfloat16"
    seed_scope: str = "finetune"  # what a seed varies: "finetune" (data draw, order) or "world" (+ world, model, SliCK)
    size_models: list = field(default_factory=lambda: [64, 128])  # chapter 8: d_model of each model, one world


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
        raise ConfigError(f"unknown parameter(s) {unknown}; known parameters are: {', '.join(sorted(known))}")
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
    for name in ("ft_format", "alt_format"):
        value = getattr(s.finetune, name)
        if value not in FT_FORMATS and not (name == "alt_format" and value == ""):
            raise ConfigError(f"{name} must be one of {sorted(FT_FORMATS)}, got {value!r}")
    if s.world.dev_exposures not in ("natural", "uniform"):
        raise ConfigError(f"dev_exposures must be 'natural' or 'uniform', got {s.world.dev_exposures!r}")
    if not 1 <= s.pretrain.qa_templates <= len(QA_TEMPLATES):
        raise ConfigError(f"qa_templates must be 1..{len(QA_TEMPLATES)}, got {s.pretrain.qa_templates}")
    if not 0.0 <= s.finetune.ft_dropout < 1.0:
        raise ConfigError(f"ft_dropout must be in [0, 1), got {s.finetune.ft_dropout}")
    if s.finetune.ft_eval not in ("teacher", "generate"):
        raise ConfigError(f"ft_eval must be 'teacher' or 'generate', got {s.finetune.ft_eval!r}")
    if s.finetune.ft_precision not in ("model", "bf16-mixed"):
        raise ConfigError(f"ft_precision must be 'model' or 'bf16-mixed', got {s.finetune.ft_precision!r}")
    if s.finetune.executor not in ("local", "ray"):
        raise ConfigError(f"executor must be 'local' or 'ray', got {s.finetune.executor!r}")
    if s.finetune.ft_group_size < 0:
        raise ConfigError(f"ft_group_size must be >= 0 (0: no limit), got {s.finetune.ft_group_size}")
    if s.study.seed_scope not in ("finetune", "world"):
        raise ConfigError(f"seed_scope must be 'finetune' or 'world', got {s.study.seed_scope!r}")
    if not s.study.seeds:
        raise ConfigError("seeds must list at least one seed")


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict[str, Any]:
    """Read the profile ``name`` (flat parameters, see :func:`profile_path`) and check its names."""
    path = profile_path(name)
    if not path.exists():
        raise ConfigError(
            f"unknown profile {name!r}: no file {path.name} in {_shown(PROFILES_DIR)}; "
            f"available: {', '.join(available_profiles())}"
        )
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{_shown(path)}: a profile must be a mapping of parameter: value")
    try:
        from_params(params)
    except ConfigError as err:
        raise ConfigError(f"{_shown(path)}: {err}") from None
    return params


_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def from_namespace(namespace: dict[str, Any]) -> Study:
    """Build the study from a notebook's globals (its parameters cell).

    Called right after the ``parameters`` cell: every global that is not
    IPython's own, private, a module or something callable (an imported class or
    function, such as ``HTML``) must be a known parameter, so a mistyped
    ``papermill -p`` name fails here instead of being silently ignored.  The
    values are the parameters (papermill's ``-f`` with a profile's YAML injects a
    whole profile); a value that differs from the named profile is reported.
    """
    given = {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_") and k not in _IPYTHON_NAMES and not isinstance(v, types.ModuleType) and not callable(v)
    }
    study = from_params(given)
    profile = load_profile(study.study.profile)
    differ = {k: given[k] for k, v in profile.items() if k in given and given[k] != v}
    if differ:
        print(
            f"note: these parameters differ from profile {study.study.profile!r}: {differ} "
            f"(to run a whole profile, pass papermill -f {_shown(profile_path(study.study.profile))})"
        )
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

    Each line is ``name: type = value  # comment`` with exactly one ``=``:
    papermill's parser (``papermill --help-notebook``, and the list of known
    names behind its "Passed unknown parameter" warning) skips any line with a
    second ``=``, so a comment or value holding one raises :class:`ConfigError`.
    """
    params = from_params(load_profile(profile)).params()
    comments = _field_comments()
    lines = [
        f"# Parameters (profile {profile!r}); papermill -f src/newknowledge/profiles/NAME.yaml "
        "or -p NAME VALUE overrides them."
    ]
    for stage in STAGES:
        lines.append(f"# {stage.__doc__.splitlines()[0]}")
        for f in fields(stage):
            note = f"  # {comments[f.name]}" if f.name in comments else ""
            value = params[f.name]
            # Strings in double quotes, as ruff format writes them (the cell is checked by ruff too).
            shown = json.dumps(value) if isinstance(value, str) else repr(value)
            line = f"{f.name}: {f.type} = {shown}{note}"
            if line.count("=") != 1 or "#" in repr(params[f.name]):
                raise ConfigError(
                    f"parameter line {line!r} cannot be read by papermill: its comment or value holds "
                    f"'=' or '#'; reword the comment of {f.name} in config.py (e.g. '0: auto', not '0 = auto')"
                )
            lines.append(line)
    return "\n".join(lines)


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able config (dataclasses allowed)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
