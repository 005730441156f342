"""What a study leaves behind: :class:`TuneResult` and ``best.yaml``, ``trials.csv``, ``history.png``, ``study.json``."""

from __future__ import annotations

import csv
import io
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from unified.files import atomic_write, atomic_write_json, atomic_write_text
from unified.tune.config import TuneConfig
from unified.tune.optuna_lib import load_optuna
from unified.tune.space import decode_params, trial_spec
from unified.tune.storage import redact
from unified.tune.text import fmt


@dataclass
class TuneResult:
    """What :func:`~unified.tune.tune` returns (also written to ``<out>/study.json``)."""

    study_name: str
    storage: str
    out_dir: Path
    metric: str
    direction: str
    counts: dict[str, int]
    best: Optional[dict[str, Any]]
    files: list[str] = field(default_factory=list)
    worker_exit_codes: list[int] = field(default_factory=list)


def report(cfg: TuneConfig, study: Any) -> TuneResult:
    """Write ``best.yaml``, ``trials.csv``, ``history.png`` and ``study.json`` for the study as it stands."""
    optuna = load_optuna()
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    files = []
    best: Optional[dict[str, Any]] = None
    if complete:
        bt = study.best_trial
        params = decode_params(cfg.tune.space, bt.params)
        spec = trial_spec(cfg, params)
        from unified.trainer import UnifiedTrainer

        import yaml

        resolved = UnifiedTrainer(spec, backend=cfg.backend).spec.to_dict()
        resolved.pop("tune", None)  # a plain spec for `unified run`
        atomic_write_text(out / "best.yaml",
                          f"# best trial {bt.number} of study {cfg.study_name}: {cfg.metric}={bt.value!r}\n"
                          + yaml.safe_dump(resolved, sort_keys=False))
        files.append("best.yaml")
        best = {"number": bt.number, "value": bt.value, "params": params, "run_dir": bt.user_attrs.get("run_dir")}
    write_trials_csv(out / "trials.csv", cfg, trials)
    files.append("trials.csv")
    plot_history(out / "history.png", cfg, trials)
    files.append("history.png")
    result = TuneResult(study_name=cfg.study_name, storage=redact(cfg.storage), out_dir=out, metric=cfg.metric,
                        direction=cfg.direction, counts=counts, best=best, files=files)
    atomic_write_json(out / "study.json", {
        "study": cfg.study_name, "storage": result.storage, "backend": cfg.backend, "metric": cfg.metric,
        "direction": cfg.direction, "n_trials": len(trials), "counts": counts, "best": best,
        "host": platform.node(),
    })
    result.files.append("study.json")
    return result


def write_trials_csv(path: Path, cfg: TuneConfig, trials: list[Any]) -> None:
    """One row per trial: number, state, value, the tuned params, last epoch, duration, host, run dir, error."""
    keys = list(cfg.tune.space)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", "state", "value", *keys, "last_epoch", "duration_s", "host", "run_dir", "error"])
    for t in trials:
        params = decode_params(cfg.tune.space, t.params)
        last_epoch = max(t.intermediate_values) if t.intermediate_values else ""
        dur = t.duration.total_seconds() if t.duration is not None else ""
        w.writerow([t.number, t.state.name.lower(), "" if t.value is None else repr(t.value),
                    *(fmt(params.get(k, "")) for k in keys), last_epoch,
                    f"{dur:.3f}" if dur != "" else "", t.user_attrs.get("host", ""), t.user_attrs.get("run_dir", ""),
                    t.user_attrs.get("error", "")])
    atomic_write_text(path, buf.getvalue())


def plot_history(path: Path, cfg: TuneConfig, trials: list[Any]) -> None:
    """The metric by trial (complete, pruned at their last report, failed) with the best-so-far line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory
    from optuna.trial import TrialState

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    done = [(t.number, t.value) for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in trials
              if t.state == TrialState.PRUNED and t.intermediate_values]
    failed = [t.number for t in trials if t.state == TrialState.FAIL]
    if done:
        ax.plot(*zip(*done), "o", color="C0", label="complete")
        xs, ys, best = [], [], None
        for n, v in done:
            best = v if best is None or (v < best if cfg.direction == "minimize" else v > best) else best
            xs.append(n)
            ys.append(best)
        xs.append(max(t.number for t in trials))
        ys.append(ys[-1])
        ax.step(xs, ys, where="post", color="C1", label="best so far")
        bn, bv = next((n, v) for n, v in done if v == ys[-1])
        ax.plot([bn], [bv], "*", color="C1", markersize=14, markeredgecolor="k", label=f"best: trial {bn}")
    if pruned:
        ax.plot(*zip(*pruned), "x", color="0.45", label="pruned (last reported)")
    if failed:
        tr = blended_transform_factory(ax.transData, ax.transAxes)
        ax.plot(failed, [0.03] * len(failed), "v", color="C3", transform=tr, label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel(cfg.metric)
    ax.set_title(f"{cfg.study_name}: {cfg.metric} by trial ({cfg.direction}, backend {cfg.backend})", fontsize=10)
    ax.grid(alpha=0.3)
    if trials:
        ax.set_xlim(-0.5, max(t.number for t in trials) + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if done or pruned or failed:
        ax.legend(fontsize=8)
    fig.tight_layout()

    def _save(tmp: str) -> None:
        fig.savefig(tmp, format="png")

    try:
        atomic_write(path, _save)
    finally:
        plt.close(fig)
