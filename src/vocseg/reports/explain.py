"""Explanations derived from a run's own settings, data and curves, not from VOC folklore.

`report` and `compare` flag patterns (over-filled, weak, memorised classes); what they then say
about the cause comes from here, and a cause is stated only when the run's files support it:

- the schedule: iterations trained, samples seen, and whether validation was still improving at
  the end (`val_trend`: the last validation against the one a quarter of the schedule earlier);
- the data: demo (the data root's `vocseg_demo.json`), VOC train, VOC train + SBD aug, or own /
  subset lists (`vocseg.runs.provenance`);
- between compared runs, the recipe differences (iterations, samples, LR, batch, data, model,
  warm-up) come before any per-class pattern.

Pure functions over `RunFacts`; `facts_from_run` is the one edge that reads files. No heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vocseg.runs.provenance import DataSource, data_source, read_recipe_fields, run_data_root

RISING_MIN_GAIN = 1.0  # mIoU points over the last quarter of the schedule that count as "still improving"
TAIL_FRACTION = 0.25
DIFFERENCE_RATIO = 1.25  # iterations, samples, LR or batch this many times apart are named as a difference


@dataclass(frozen=True)
class Trend:
    """Validation mIoU at the end of a run. state: rising | plateau | flat (never rose: it has not
    started learning) | unknown (fewer than 3 validations)."""

    state: str
    from_step: int = 0
    to_step: int = 0
    from_miou: float = 0.0
    to_miou: float = 0.0

    @property
    def gain(self) -> float:
        return round(self.to_miou - self.from_miou, 2)

    def text(self) -> str:
        if self.state == "unknown":
            return "too few validations to say whether it was still improving"
        span = f"{self.from_miou:.1f} -> {self.to_miou:.1f} mIoU from iteration {self.from_step:,} to {self.to_step:,}"
        if self.state == "flat":
            return f"validation never rose ({span}): the model had not started learning"
        return f"validation was still rising at the end ({span})" if self.state == "rising" else f"validation had levelled off ({span})"


def val_trend(miou: dict[int, float], *, tail: float = TAIL_FRACTION, min_gain: float = RISING_MIN_GAIN) -> Trend:
    """Compare the last validation with the latest one at or before `(1 - tail)` x the last step.

    `miou`: iteration -> val mIoU (percent), as `vocseg.runs.curves.read_curves` gives it.
    rising: the gain is at least `min_gain` points; plateau: less (or a fall) after a rise of at
    least `min_gain` since the first validation; flat: no such rise at all; unknown: < 3 points.
    """
    steps = sorted(miou)
    if len(steps) < 3:
        return Trend("unknown")
    last = steps[-1]
    earlier = [s for s in steps[:-1] if s <= last * (1 - tail)] or steps[:1]
    start = earlier[-1]
    gain = miou[last] - miou[start]
    if gain >= min_gain:
        return Trend("rising", start, last, round(miou[start], 2), round(miou[last], 2))
    if max(miou.values()) - miou[steps[0]] < min_gain:
        return Trend("flat", steps[0], last, round(miou[steps[0]], 2), round(miou[last], 2))
    return Trend("plateau", start, last, round(miou[start], 2), round(miou[last], 2))


@dataclass(frozen=True)
class RunFacts:
    """What a run's files say about its training. Counts are None where the files do not say."""

    label: str
    run: str = ""
    iters: int | None = None  # iterations trained (the last logged step), else planned
    planned_iters: int | None = None
    total_batch: int | None = None
    lr: float | None = None
    warmup_iters: int | None = None
    model: str = ""
    data: DataSource | None = None
    val_miou: dict[int, float] = field(default_factory=dict)

    @property
    def samples(self) -> int | None:
        return self.iters * self.total_batch if self.iters and self.total_batch else None

    @property
    def trend(self) -> Trend:
        return val_trend(self.val_miou)

    def schedule_text(self) -> str:
        """'600 iterations at batch 8 = 4,800 samples' with what is known."""
        if not self.iters:
            return "schedule unknown"
        text = f"{self.iters:,} iterations"
        if self.planned_iters and self.planned_iters != self.iters:
            text += f" of {self.planned_iters:,} planned"
        if self.total_batch:
            text += f" at batch {self.total_batch} = {self.samples:,} samples"
        return text


def facts_from_run(run: Path, label: str = "") -> RunFacts:
    """RunFacts from RUN/recipe.json (through `recipe.plan` when its data root is readable) and the logged curves."""
    from vocseg.runs.curves import read_curves

    fields = read_recipe_fields(run)
    curves = read_curves(run)
    done = max(curves.loss) if curves.loss else None
    planned = total = train_images = None
    lr = None
    aug = bool(fields.get("aug", True))
    if fields:
        from vocseg.errors import VocsegError
        from vocseg.recipe.recipe import Recipe, plan

        try:
            recipe = Recipe.from_json((run / "recipe.json").read_text())
            total = recipe.total_batch
            aug = recipe.aug
            p = plan(recipe)
        except (OSError, ValueError, TypeError, VocsegError):
            p = None
        if p is not None:
            planned, total, lr, train_images = p.max_iters, p.total_batch, p.lr, p.train_size
    root = run_data_root(run)
    return RunFacts(
        label=label or run.name,
        run=str(run),
        iters=done or planned,
        planned_iters=planned,
        total_batch=total,
        lr=lr,
        warmup_iters=fields.get("warmup_iters") if isinstance(fields.get("warmup_iters"), int) else None,
        model=str(fields.get("model") or ""),
        data=data_source(root, aug, train_images) if (root or fields) else None,
        val_miou=dict(curves.miou),
    )


# ---------------------------------------------------------------- one run


def schedule_note(facts: RunFacts) -> str:
    """The run's schedule and validation trend, with the advice they support ("" when nothing is known)."""
    if not facts.iters:
        return ""
    trend = facts.trend
    text = f"{facts.label}: trained {facts.schedule_text()}; {trend.text()}"
    if trend.state in ("rising", "flat"):
        longer = facts.iters * 2 if trend.state == "rising" else facts.iters * 10
        text += f". The schedule is the first limit: train longer (e.g. `--iters {longer:,}`) before reading causes into single classes."
    elif trend.state == "plateau":
        text += ": more of the same schedule is unlikely to help much."
    else:
        text += "."
    return text


def weak_cause(facts: RunFacts | None) -> str:
    """What the run's own facts say about classes far below its mIoU."""
    if facts is None or not facts.iters:
        return "the run's schedule and curves are unknown here, so no cause is stated: see what each class is mistaken for in the confusion matrix and its gallery"
    trend = facts.trend
    if trend.state in ("rising", "flat"):
        return (
            f"{trend.text()} after {facts.schedule_text()}: the schedule is the first suspect, since the weakest classes are "
            "usually the last to be learned; train longer and look again"
        )
    where = "the demo's shapes" if facts.data is not None and facts.data.kind == "demo" else "these classes"
    if trend.state == "plateau":
        return (
            f"{trend.text()} after {facts.schedule_text()}, so it is not the schedule length; see what {where} are mistaken for "
            "in the confusion matrix and the galleries, and compare with a stronger model (`vocseg eval official:upernet-r50-40k` on VOC)"
        )
    return f"{trend.text()}; see what {where} are mistaken for in the confusion matrix and the galleries"


def overfill_cause(facts: RunFacts | None) -> str:
    """Why predictions may spill past objects, as far as the run's data and schedule support it."""
    data = facts.data if facts is not None else None
    if data is None:
        return "the training data are unknown here, so no cause is stated; look at the false-alarm (blue) pixels in the galleries"
    if data.has_sbd_polygons:
        return "trained on VOC train + SBD aug, whose polygon masks are coarser than VOC's and spill over thin parts; one remedy to try: a short fine-tune on VOC's fine labels (train.txt)"
    rising = facts is not None and facts.trend.state in ("rising", "flat")
    if data.kind == "demo":
        cause = "the demo's masks are exact, so the masks are not the cause"
    elif data.kind == "voc":
        cause = "trained on VOC's fine masks only, so coarse labels are not the cause"
    else:
        cause = "trained on own or subset lists: check that their masks follow the object edges"
    if rising:
        return f"{cause}; validation was still rising, so the blurry boundaries of an under-trained model are the likelier reason: train longer"
    return f"{cause}; look at the false-alarm (blue) pixels in the galleries"


def memorisation_cause(facts: RunFacts | None) -> str:
    """Why train and val differ, from the data size and samples seen."""
    if facts is None or facts.data is None or not facts.data.images or not facts.samples:
        return "more data, fewer epochs or stronger augmentation; `vocseg eval RUN --split train` measures the gap"
    epochs = facts.samples / facts.data.images
    return f"each of the {facts.data.images:,} training images was seen about {epochs:.0f} times ({facts.schedule_text()}): more data, fewer epochs or stronger augmentation"


# ---------------------------------------------------------------- two runs


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else b / a


def _times(r: float) -> str:
    return f"{r:.1f}x" if r >= 1 else f"1/{1 / r:.1f}"


def recipe_differences(base: RunFacts, other: RunFacts) -> list[str]:
    """The recipe differences between two runs that can explain their scores, largest first in kind:
    training length (iterations, samples seen), data, LR, batch, model, warm-up. [] when none is known."""
    out: list[str] = []
    it = _ratio(base.iters, other.iters)
    if it is not None and (it >= DIFFERENCE_RATIO or it <= 1 / DIFFERENCE_RATIO):
        samples = _ratio(base.samples, other.samples)
        seen = f", {_times(samples)} the samples ({other.samples:,} vs {base.samples:,})" if samples is not None else ""
        out.append(f"{other.label} trained {_times(it)} the iterations of {base.label} ({other.iters:,} vs {base.iters:,}){seen}")
    elif (s := _ratio(base.samples, other.samples)) is not None and (s >= DIFFERENCE_RATIO or s <= 1 / DIFFERENCE_RATIO):
        out.append(f"{other.label} saw {_times(s)} the training samples of {base.label} ({other.samples:,} vs {base.samples:,})")
    if base.data is not None and other.data is not None and base.data != other.data:
        out.append(f"data: {base.label} trained on {base.data.label}; {other.label} on {other.data.label}")
    lr = _ratio(base.lr, other.lr)
    if lr is not None and (lr >= DIFFERENCE_RATIO or lr <= 1 / DIFFERENCE_RATIO):
        out.append(f"LR {other.lr:g} vs {base.lr:g} ({_times(lr)})")
    if base.total_batch and other.total_batch and base.total_batch != other.total_batch:
        out.append(f"total batch {other.total_batch} vs {base.total_batch}")
    if base.model and other.model and base.model != other.model:
        out.append(f"model {other.model} vs {base.model}")
    if base.warmup_iters is not None and other.warmup_iters is not None and base.warmup_iters != other.warmup_iters:
        out.append(f"warm-up {other.warmup_iters} vs {base.warmup_iters} iterations")
    return out
