"""Compare evaluation results side by side and flag the patterns that have a known cause.

Inputs: eval JSONs (`vocseg eval --json`), run folders (their `eval/val.json` and, when present,
`eval/train.json`), and files holding several runs (`{"runs": [{"name", "settings", "per_class"}]}`,
like shared/reference/seed_runs.json). No heavy imports. One idea, kept in one module (~450 lines):
the loading of results and the rules that flag them share the RunResult type and its thresholds.

Flags, each from the numbers (or the written settings) alone:
- recipe (first): how compared runs differ in training (iterations, samples seen, data, LR, batch,
  model), from their recipe.json and logs: a 5x longer schedule explains more than any class does;
- over-filled: a class whose IoU fell while its Acc (recall) rose against the baseline, or whose
  predicted area is far larger than its true area (derived from IoU and Acc): the model paints past
  the object;
- memorisation: a run scoring much higher on its training images than on val;
- weak: a class far below its run's mean IoU in every result;
- settings: facts about how a run was trained that differ from the official recipe.

The causes a flag names come from the run (`vocseg.reports.explain`): its data (demo, VOC,
VOC + SBD, own lists), its schedule and whether validation was still rising; where the inputs carry
no run folder, no cause is stated.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vocseg.console import command
from vocseg.errors import VocsegError
from vocseg.evaluation.eval_result import format_value
from vocseg.recipe.official import ModelRef
from vocseg.reports.explain import RunFacts, facts_from_run, memorisation_cause, overfill_cause, recipe_differences, weak_cause
from vocseg.reports.thresholds import DEFAULT_THRESHOLDS, Thresholds

OFFICIAL_SAMPLES = 40_000 * 16  # the official 40k schedule at batch 16
OFFICIAL_LR, OFFICIAL_BATCH = 0.01, 16




@dataclass
class RunResult:
    label: str
    source: str
    split: str
    mIoU: float
    mAcc: float
    per_class: dict[str, dict[str, Any]]
    aAcc: float | None = None
    group: str = ""  # the model the numbers belong to: pairs its train and val results
    settings: dict[str, Any] = field(default_factory=dict)
    facts: RunFacts | None = None  # the run's schedule, data and curves, when its run folder is known

    def value(self, cls: str, key: str) -> float | None:
        v = self.per_class.get(cls, {}).get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return float(v)


@dataclass
class Flag:
    kind: str  # over-filled | memorisation | weak | settings
    run: str  # the result it is about ("" for all)
    message: str
    classes: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str = ""  # the vocseg command that shows or prevents it

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "run": self.run, "classes": self.classes, "message": self.message, "evidence": self.evidence, "fix": self.fix}


MARKERS = {"over-filled": "F", "weak": "W", "memorisation": "M"}


@dataclass
class Comparison:
    runs: list[RunResult]
    classes: list[str]
    flags: list[Flag]
    thresholds: Thresholds

    @property
    def baseline(self) -> RunResult:
        return self.runs[0]

    def delta(self, run: RunResult, cls: str, key: str) -> float | None:
        a, b = self.baseline.value(cls, key), run.value(cls, key)
        return None if a is None or b is None else round(b - a, 2)

    def flagged_classes(self) -> dict[str, list[str]]:
        """class -> markers (F over-filled, W weak, M memorised) for the table and chart."""
        marks: dict[str, list[str]] = {}
        for flag in self.flags:
            marker = MARKERS.get(flag.kind)
            for c in flag.classes if marker else []:
                if marker not in marks.setdefault(c, []):
                    marks[c].append(marker)
        return marks

    def flag_legend(self) -> dict[str, str]:
        used = {m for ms in self.flagged_classes().values() for m in ms}
        return {m: kind for kind, m in MARKERS.items() if m in used}

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.label,
            "thresholds": self.thresholds.to_json(),
            "runs": [
                {
                    "label": r.label,
                    "source": r.source,
                    "split": r.split,
                    "mIoU": r.mIoU,
                    "mAcc": r.mAcc,
                    "aAcc": r.aAcc,
                    "training": _facts_json(r.facts),
                    "per_class": {
                        c: {
                            "IoU": r.value(c, "IoU"),
                            "Acc": r.value(c, "Acc"),
                            "dIoU": self.delta(r, c, "IoU"),
                            "dAcc": self.delta(r, c, "Acc"),
                            "pred_to_true_area": area_ratio(r, c),
                        }
                        for c in self.classes
                    },
                }
                for r in self.runs
            ],
            "flags": [f.to_json() for f in self.flags],
        }


def _facts_json(facts: RunFacts | None) -> dict[str, Any] | None:
    """What the run's files say about its training (None when the result has no run folder)."""
    if facts is None:
        return None
    trend = facts.trend
    return {
        "run": facts.run,
        "iterations": facts.iters,
        "total_batch": facts.total_batch,
        "samples": facts.samples,
        "lr": facts.lr,
        "data": facts.data.kind if facts.data else None,
        "train_images": facts.data.images if facts.data else None,
        "val_trend": {"state": trend.state, "from": [trend.from_step, trend.from_miou], "to": [trend.to_step, trend.to_miou]} if trend.state != "unknown" else {"state": "unknown"},
    }


# ---------------------------------------------------------------- loading


def _bad(path: Path, why: str) -> VocsegError:
    return VocsegError(f"{path} is not an eval result: {why}.", "Pass JSON written by `vocseg eval --json`, a run folder with eval results, or a file of runs like seed_runs.json.")


def _per_class(path: Path, data: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(data, dict) or not data:
        raise _bad(path, f"{where} has no per_class table")
    table: dict[str, dict[str, Any]] = {}
    for cls, vals in data.items():
        if not isinstance(vals, dict) or "IoU" not in vals or "Acc" not in vals:
            raise _bad(path, f"{where}: class {cls!r} has no IoU/Acc")
        for key in ("IoU", "Acc"):
            v = vals[key]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise _bad(path, f"{where}: {cls} {key} is {v!r}, not a number")
        table[str(cls)] = dict(vals)
    return table


def _mean(table: dict[str, dict[str, Any]], key: str) -> float:
    vals = [float(v[key]) for v in table.values() if v.get(key) is not None and not math.isnan(float(v[key]))]
    return round(sum(vals) / len(vals), 2) if vals else float("nan")


def _number(data: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        v = data.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise VocsegError(f"Cannot read {path}: {exc}.", "Check the path.") from None
    except json.JSONDecodeError as exc:
        raise _bad(path, f"invalid JSON ({exc.msg} at line {exc.lineno})") from None


def _eval_result(path: Path, data: dict[str, Any], label: str, group: str) -> RunResult:
    table = _per_class(path, data.get("per_class"), "the file")
    miou = _number(data, "mIoU")
    if miou is None:
        raise _bad(path, "no numeric mIoU")
    return RunResult(
        label=label,
        source=str(path),
        split=str(data.get("split") or "val"),
        mIoU=miou,
        mAcc=_number(data, "mAcc") or _mean(table, "Acc"),
        aAcc=_number(data, "aAcc"),
        per_class=table,
        group=group or str(data.get("checkpoint") or path),
        settings=data.get("settings") if isinstance(data.get("settings"), dict) else {},
    )


def load_results(path: Path) -> list[RunResult]:
    """One input path -> its results (several for a run folder or a file of runs)."""
    if path.is_dir():
        found = [(split, path / "eval" / f"{split}.json") for split in ("val", "train")]
        found = [(s, p) for s, p in found if p.is_file()]
        if not found:
            raise VocsegError(f"{path} has no eval results ({path / 'eval' / 'val.json'} is missing).", f"Run `{command('eval', path)}` (and `--split train` for the train/val gap) first.")
        results = []
        for split, p in found:
            data = _read_json(p)
            if not isinstance(data, dict):
                raise _bad(p, "not a JSON object")
            name = run_label(path)
            result = _eval_result(p, data, f"{name} ({split} split)" if split != "val" else name, group=str(path.resolve()))
            result.facts = facts_from_run(path, name)
            result.settings.update(recipe_settings(path))
            results.append(result)
        return results
    if not path.is_file():
        raise VocsegError(f"{path} does not exist.", "Pass eval JSON files or run folders.")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise _bad(path, "not a JSON object")
    if isinstance(data.get("runs"), list):
        if not data["runs"]:
            raise _bad(path, "its runs list is empty")
        results = []
        for k, run in enumerate(data["runs"]):
            if not isinstance(run, dict):
                raise _bad(path, f"runs[{k}] is not an object")
            name = str(run.get("name") or f"{path.stem}[{k}]")
            table = _per_class(path, run.get("per_class"), f"run {name!r}")
            results.append(
                RunResult(
                    label=name,
                    source=f"{path}#{name}",
                    split=str(run.get("split") or "val"),
                    mIoU=_number(run, "mIoU", "mIoU_mean_of_classes") or _mean(table, "IoU"),
                    mAcc=_number(run, "mAcc", "mAcc_mean_of_classes") or _mean(table, "Acc"),
                    aAcc=_number(run, "aAcc"),
                    per_class=table,
                    group=str(run.get("checkpoint") or f"{path}#{name}"),
                    settings=run.get("settings") if isinstance(run.get("settings"), dict) else {},
                )
            )
        return results
    if "per_class" not in data:
        raise _bad(path, "no per_class table and no runs list")
    result = _eval_result(path, data, file_label(path, data), group="")
    run = run_folder_of(path, data)
    result.facts = facts_from_run(run, run_label(run)) if run is not None else None
    return [result]


def run_folder_of(path: Path, data: dict[str, Any]) -> Path | None:
    """The run folder an eval JSON belongs to: RUN/eval/x.json, else its checkpoint's folder (None if neither)."""
    candidates = [path.resolve().parent.parent]
    checkpoint = data.get("checkpoint")
    if isinstance(checkpoint, str) and checkpoint.strip() and not checkpoint.startswith("official:"):
        ckpt = Path(checkpoint.strip())
        candidates += [ckpt, ckpt.parent]
    for c in candidates:
        if (c / "config.py").is_file() and c.is_dir():
            return c
    return None


# Names that say what a file or folder is, not which model: `runs/demo/train`, `eval.json`, `val.json`.
GENERIC_NAMES = frozenset({
    "train", "val", "test", "trainval", "trainaug", "aug", "eval", "evaluation", "result", "results", "metrics",
    "output", "outputs", "out", "run", "runs", "latest", "work_dir", "work_dirs", "checkpoints", "model", "predictions",
})


def run_label(run: Path) -> str:
    """A run folder's name, with its parent's when the name alone says nothing (`runs/demo/train` -> `demo/train`)."""
    run = run.resolve()
    if run.name.lower() in GENERIC_NAMES and run.parent.name:
        return f"{run.parent.name}/{run.name}"
    return run.name


def file_label(path: Path, data: dict[str, Any]) -> str:
    """An eval JSON's label: its name (`r50-aug.json` -> `r50-aug`), `RUN/val` for `RUN/eval/val.json`,
    and for a name that says nothing (`eval.json`, `results.json`) the checkpoint it measured
    (`demo/train iter_3000`), else its folder (`demo/eval`)."""
    stem = path.stem
    if path.parent.name == "eval" and (path.parent.parent / "config.py").is_file():
        return f"{run_label(path.parent.parent)}/{stem}"  # RUN/eval/val.json -> RUN/val
    if stem.lower() not in GENERIC_NAMES:
        return stem
    checkpoint = data.get("checkpoint")
    if isinstance(checkpoint, str) and checkpoint.strip() and not ModelRef(checkpoint).is_official:
        ckpt = Path(checkpoint.strip())
        if ckpt.parent.name:
            return f"{run_label(ckpt.parent)} {ckpt.stem}"
        return ckpt.stem
    if isinstance(checkpoint, str) and ModelRef(checkpoint).is_official:
        return checkpoint
    folder = path.resolve().parent
    return f"{folder.name}/{stem}" if folder.name else stem


def _unique_labels(runs: list[RunResult]) -> None:
    """Make every label distinct: first by more of each clashing result's source path, then by a number."""
    for _ in range(4):
        changed = False
        for group in _clashing(runs):
            if len({r.source for r in group}) == 1:
                continue  # the same file given twice: numbered below
            for r in group:
                src = Path(r.source.split("#", 1)[0]).resolve()
                parts = [p for p in src.parent.parts[1:] if p not in r.label.split("/")]
                if parts:
                    r.label, changed = f"{parts[-1]}/{r.label}", True
        if not changed:
            break
    seen: dict[str, int] = {}
    for r in runs:
        n = seen.get(r.label, 0)
        seen[r.label] = n + 1
        if n:
            r.label = f"{r.label} #{n + 1}"


def _clashing(runs: list[RunResult]) -> list[list[RunResult]]:
    groups: dict[str, list[RunResult]] = {}
    for r in runs:
        groups.setdefault(r.label, []).append(r)
    return [g for g in groups.values() if len(g) > 1]


# ---------------------------------------------------------------- flags


def area_ratio(run: RunResult, cls: str) -> float | None:
    """Predicted pixels / true pixels: exact from pixel counts, else from IoU and Acc (recall).

    IoU = I / (P + L - I) and Acc = I / L give P / L = Acc / IoU - 1 + Acc.
    """
    vals = run.per_class.get(cls, {})
    pred, true = vals.get("pred_pixels"), vals.get("gt_pixels")
    if isinstance(pred, (int, float)) and isinstance(true, (int, float)) and true > 0:
        return round(pred / true, 2)
    iou, acc = run.value(cls, "IoU"), run.value(cls, "Acc")
    if not iou or acc is None:
        return None
    return round((acc / 100) / (iou / 100) - 1 + acc / 100, 2)


def overfill_flags(runs: list[RunResult], min_change: float, area_limit: float) -> list[Flag]:
    """IoU down and Acc up against the first result of the same split; or predicted area >= area_limit x true."""
    flags: list[Flag] = []
    first_of_split: dict[str, RunResult] = {}
    for run in runs:
        base = first_of_split.setdefault(run.split, run)
        hits: dict[str, str] = {}
        evidence: dict[str, Any] = {}
        for cls in run.per_class:
            ratio = area_ratio(run, cls)
            if base is not run:
                b_iou, b_acc = base.value(cls, "IoU"), base.value(cls, "Acc")
                iou, acc = run.value(cls, "IoU"), run.value(cls, "Acc")
                if None not in (b_iou, b_acc, iou, acc) and iou - b_iou <= -min_change and acc - b_acc >= min_change:  # type: ignore[operator]
                    b_ratio = area_ratio(base, cls)
                    hits[cls] = (
                        f"{cls}: IoU {b_iou:.2f} -> {iou:.2f} ({iou - b_iou:+.2f}) while Acc {b_acc:.2f} -> {acc:.2f} ({acc - b_acc:+.2f}); "  # type: ignore[operator]
                        f"predicted/true area {format_value(b_ratio, missing='n/a')} -> {format_value(ratio, missing='n/a')}"
                    )
                    evidence[cls] = {"IoU": [b_iou, iou], "Acc": [b_acc, acc], "pred_to_true_area": [b_ratio, ratio], "against": base.label}
                    continue
            if ratio is not None and ratio >= area_limit:
                hits[cls] = f"{cls}: predicted area {ratio:.2f}x the true area (IoU {format_value(run.value(cls, 'IoU'), missing='n/a')}, Acc {format_value(run.value(cls, 'Acc'), missing='n/a')})"
                evidence[cls] = {"IoU": run.value(cls, "IoU"), "Acc": run.value(cls, "Acc"), "pred_to_true_area": ratio}
        if hits:
            flags.append(
                Flag(
                    "over-filled",
                    run.label,
                    f"{run.label}: over-filled predictions. " + "; ".join(hits.values()),
                    classes=list(hits),
                    evidence=evidence,
                    fix=_overfill_fix(run),
                )
            )
    return flags


def _overfill_fix(run: RunResult) -> str:
    """The cause the run's facts support; for a file of runs, its written settings (SBD named there)."""
    if run.facts is not None:
        return overfill_cause(run.facts) + "; see it in the overlays (`vocseg predict`) and the confusion matrix's background row (`vocseg eval`)"
    sbd = re.search(r"sbd|aug\.txt|voc12_aug", f"{run.settings.get('train_set', '')} {run.settings.get('base_configs', '')}", re.I) is not None
    if sbd:
        return "its settings name SBD: SBD's polygon masks are coarser than VOC's and spill over thin parts; one remedy to try: a short fine-tune on VOC's fine labels (train.txt)"
    return overfill_cause(None)


def memorisation_flags(runs: list[RunResult], gap: float) -> list[Flag]:
    """A train result and a val result of the same model, far apart."""
    flags = []
    by_group: dict[str, dict[str, RunResult]] = {}
    for run in runs:
        by_group.setdefault(run.group, {})[run.split] = run
    for splits in by_group.values():
        train, val = splits.get("train") or splits.get("trainaug"), splits.get("val")
        if train is None or val is None or train.mIoU - val.mIoU < gap:
            continue
        per_class = {c: round(train.value(c, "IoU") - val.value(c, "IoU"), 2) for c in val.per_class if train.value(c, "IoU") is not None and val.value(c, "IoU") is not None}  # type: ignore[operator]
        worst = sorted(per_class, key=lambda c: -per_class[c])[:5]
        flags.append(
            Flag(
                "memorisation",
                val.label,
                f"{val.label}: mIoU {train.mIoU:.2f} on its training images vs {val.mIoU:.2f} on val (gap {train.mIoU - val.mIoU:.2f}); "
                "largest class gaps: " + ", ".join(f"{c} {per_class[c]:+.2f}" for c in worst),
                classes=[c for c in worst if per_class[c] >= gap],
                evidence={"train_mIoU": train.mIoU, "val_mIoU": val.mIoU, "class_gaps": per_class},
                fix=memorisation_cause(val.facts),
            )
        )
    return flags


def weak_flags(runs: list[RunResult], margin: float) -> list[Flag]:
    """Classes at least `margin` IoU points below their run's mean in every val result (every result if none is val)."""
    pool = [r for r in runs if r.split == "val"] or runs
    classes = list(pool[0].per_class)
    weak = []
    for cls in classes:
        vals = [r.value(cls, "IoU") for r in pool]
        if all(v is not None and v <= r.mIoU - margin for v, r in zip(vals, pool)):
            weak.append(cls)
    if not weak:
        return []
    detail = "; ".join(f"{c} " + " / ".join(format_value(r.value(c, "IoU"), missing='n/a') for r in pool) for c in weak)
    return [
        Flag(
            "weak",
            "",
            f"weak in every result (IoU at least {margin:g} below the run's mIoU in {', '.join(r.label for r in pool)}): {detail}",
            classes=weak,
            evidence={c: [r.value(c, "IoU") for r in pool] for c in weak},
            fix=weak_cause(_telling_facts(pool)),
        )
    ]


def _telling_facts(runs: list[RunResult]) -> RunFacts | None:
    """The facts that bear on a pattern common to several runs: a run still rising first (its schedule
    is the likelier cause), else the first run whose facts are known."""
    known = [r.facts for r in runs if r.facts is not None and r.facts.iters]
    rising = [f for f in known if f.trend.state in ("rising", "flat")]
    return (rising or known or [None])[0]


def recipe_flags(runs: list[RunResult]) -> list[Flag]:
    """How each run differs in training from the baseline (first) run, from their run folders."""
    base = runs[0]
    flags: list[Flag] = []
    for run in runs[1:]:
        if run.group == base.group or base.facts is None or run.facts is None:
            continue
        a, b = _relabel(base.facts, base.label), _relabel(run.facts, run.label)
        diffs = recipe_differences(a, b)
        if not diffs:
            continue
        trends = "; ".join(f"{f.label}: {f.trend.text()}" for f in (a, b) if f.trend.state != "unknown")
        flags.append(
            Flag(
                "recipe",
                run.label,
                f"{b.label} vs {a.label}: " + "; ".join(diffs) + (f". {trends}" if trends else ""),
                evidence={"iterations": [a.iters, b.iters], "samples": [a.samples, b.samples], "lr": [a.lr, b.lr], "total_batch": [a.total_batch, b.total_batch],
                          "data": [a.data.kind if a.data else None, b.data.kind if b.data else None]},
                fix="these runs differ in training first: read per-class differences in that light, or compare runs that differ in one setting",
            )
        )
    return flags


def _relabel(facts: RunFacts, label: str) -> RunFacts:
    return replace(facts, label=label)


def _text(settings: dict[str, Any]) -> str:
    return " | ".join(f"{k}: {v}" for k, v in settings.items())


def _train_size(settings: dict[str, Any]) -> int | None:
    text = str(settings.get("train_set", ""))
    m = re.findall(r"=\s*([\d,]+)\s*$", text.strip()) or re.findall(r"\(([\d,]+)\s*images", text) or re.findall(r"([\d,]+)\s*images", text)
    return int(m[-1].replace(",", "")) if m else None


def _total_batch(settings: dict[str, Any]) -> int | None:
    v = settings.get("total_batch")
    if isinstance(v, int):
        return v
    gpus, per = settings.get("gpus"), settings.get("batch_per_gpu")
    return gpus * per if isinstance(gpus, int) and isinstance(per, int) else None


def settings_flags(run: RunResult) -> list[Flag]:
    """Facts of a run's written settings that differ from the official recipe (see docs/experiments.md)."""
    s = run.settings
    if not s:
        return []
    flags: list[Flag] = []
    text = _text(s)
    pretrained = str(s.get("pretrained", ""))
    if "torchvision://" in pretrained and re.search(r"V1c|deep stem", pretrained + str(s.get("base_configs", "")), re.I):
        flags.append(
            Flag("settings", run.label, f"{run.label}: torchvision weights (7x7 conv1 stem) on a ResNetV1c (deep stem.* convs): the stem keys do not match, so the stem started untrained.",
                 evidence={"pretrained": pretrained}, fix="`vocseg config` refuses this pairing and picks open-mmlab://resnet50_v1c")
        )
    batch = _total_batch(s)
    lr_m = re.search(r"\blr\s*=\s*([0-9.]+(?:e-?\d+)?)", str(s.get("optimizer", "")))
    if batch and lr_m:
        lr, expected = float(lr_m.group(1)), OFFICIAL_LR * batch / OFFICIAL_BATCH
        if abs(lr - expected) > 0.1 * expected:
            flags.append(
                Flag("settings", run.label, f"{run.label}: LR {lr:g} at total batch {batch}; the linear scaling rule gives {expected:g} ({OFFICIAL_LR:g} x {batch}/{OFFICIAL_BATCH}).",
                     evidence={"lr": lr, "total_batch": batch, "scaled_lr": expected}, fix="`vocseg config` scales the LR to the total batch and prints the rule")
            )
    schedule = str(s.get("schedule", ""))
    epochs_m = re.search(r"(\d+)\s*epochs", schedule)
    if "by_epoch=True" in schedule and "convert_to_iter_based" not in schedule:
        steps = f" ({epochs_m.group(1)} LR values in the whole run)" if epochs_m else ""
        flags.append(
            Flag("settings", run.label, f"{run.label}: PolyLR by_epoch=True changes the LR once per epoch{steps}; the official recipe decays it every iteration.",
                 evidence={"schedule": schedule}, fix="`vocseg config` writes PolyLR by_epoch=False and converts epochs to iterations")
        )
    size = _train_size(s)
    if size and epochs_m:
        epochs = int(epochs_m.group(1))
        samples = epochs * size
        ratio = samples / OFFICIAL_SAMPLES
        flags.append(
            Flag("settings", run.label, f"{run.label}: {epochs} epochs x {size:,} images = {samples:,} samples = {ratio:.2f}x the official 40k x 16 ({OFFICIAL_SAMPLES:,}); "
                 f"the official 40k equals {OFFICIAL_SAMPLES / size:.1f} epochs on these images.",
                 evidence={"epochs": epochs, "train_size": size, "samples": samples, "ratio_to_official": round(ratio, 2)},
                 fix="`vocseg config --epochs N` / `--schedule 40k` prints samples seen and the ratio before training")
        )
        if size < 2000 and epochs >= 50:
            flags.append(
                Flag("settings", run.label, f"{run.label}: each of only {size:,} training images was seen {epochs} times: expect memorisation (a large train/val gap).",
                     evidence={"train_size": size, "epochs": epochs}, fix="`vocseg eval RUN --split train` next to `--split val` measures the gap; `vocseg train --aug` adds SBD's 9,118 images")
            )
    for m in re.finditer(r"40k[^|]*?(?:about|approximately|~|≈)\s*(\d+(?:\.\d+)?)\s*epochs", text):
        claimed = float(m.group(1))
        if size:
            actual = OFFICIAL_SAMPLES / size
            if abs(claimed - actual) > 0.1 * actual:
                kept = round(40_000 * (batch or OFFICIAL_BATCH) / size, 1)
                flags.append(
                    Flag("settings", run.label, f"{run.label}: the config says 40k iterations is about {claimed:g} epochs, but 40k x 16 / {size:,} = {actual:.1f} epochs "
                         f"({claimed:g} is 40k iterations at batch {batch}: {kept} epochs, half the official samples).",
                         evidence={"claimed_epochs": claimed, "official_epochs": round(actual, 1)}, fix="`vocseg config --schedule 40k` converts by samples seen, not iterations")
                )
    return flags


def recipe_settings(run_dir: Path) -> dict[str, Any]:
    """What `compare` reads of a run folder's recipe.json: its class weights ("none" when the
    recipe has none; nothing for a folder without a readable recipe.json)."""
    try:
        data = json.loads((run_dir / "recipe.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    choice = data.get("class_weight", "none")
    values = data.get("class_weight_values")
    if isinstance(values, list) and values and choice == "auto":
        return {"class_weight": "auto: " + ",".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in values)}
    return {"class_weight": str(choice)}


def class_weight_flags(runs: list[RunResult]) -> list[Flag]:
    """A flag when runs whose recipe.json is known differ in their class weights."""
    known = {r.label: r.settings["class_weight"] for r in runs if "class_weight" in r.settings}
    if len(set(known.values())) < 2:
        return []
    detail = "; ".join(f"{label}: {value}" for label, value in known.items())
    return [Flag("settings", "", f"class weights differ (--class-weight): {detail}", evidence={"class_weight": known},
                 fix="per-class IoU moves with the class weights: compare runs that differ in one setting")]


def compare_results(runs: list[RunResult], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Comparison:
    t = thresholds
    if len(runs) < 2:
        raise VocsegError(f"compare needs two or more results; got {len(runs)}.", "Pass more eval JSONs or run folders (a run folder with eval/val.json and eval/train.json counts as two).")
    _unique_labels(runs)
    classes: list[str] = []
    for r in runs:
        classes.extend(c for c in r.per_class if c not in classes)
    flags = recipe_flags(runs) + overfill_flags(runs, t.min_change, t.area_limit) + memorisation_flags(runs, t.gap) + weak_flags(runs, t.weak_margin)
    for r in runs:
        flags.extend(settings_flags(r))
    flags.extend(class_weight_flags(runs))
    return Comparison(runs, classes, flags, t)


def compare_paths(paths: list[Path], thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Comparison:
    runs: list[RunResult] = []
    for p in paths:
        runs.extend(load_results(p))
    return compare_results(runs, thresholds)


__all__ = ["DEFAULT_THRESHOLDS", "Comparison", "Flag", "RunResult", "Thresholds", "area_ratio", "compare_paths", "compare_results", "load_results"]
