"""`vocseg report`: one self-contained HTML page that shows why a run's model is good or bad.

The page (default `RUN/report.html`) holds everything inline: CSS, pictures as data URIs, and
one small script that only sorts tables when a header is clicked (tables are already ordered
worst-first without it). It loads nothing from the network. Sections:

1. recipe and plan (recipe.json through `vocseg.recipe.recipe.plan`, with the warnings
   `vocseg config` prints);
2. training curves (MMEngine's scalars.json via `vocseg.runs.curves`);
3. per split, the latest eval in RUN/eval/: the per-class table with the `compare` flags
   (over-filled, weak, memorisation) beside their classes, one sentence per flag, the
   confusion matrix and the IoU chart;
4. error galleries from the val eval's `<tag>_images.json` (`vocseg.evaluation.galleries`);
5. predictions on the user's photos (`--photos DIR`);
6. another run or eval JSON side by side (`--compare`), as `vocseg compare` computes it.

The HTML is a Jinja2 template (`templates/report.html.j2`, autoescaped).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocseg.console import command
from vocseg.errors import VocsegError
from vocseg.evaluation.eval_result import EvalResult, format_value, load_result, most_confused_with
from vocseg.files import read_regular
from vocseg.reports import pictures as pics
from vocseg.reports.compare import DEFAULT_THRESHOLDS, Comparison, Flag, RunResult, load_results, memorisation_flags, overfill_flags, run_label, weak_flags
from vocseg.reports.explain import RunFacts, facts_from_run, schedule_note
from vocseg.runs.folders import CONFIG_NAME, RECIPE_NAME, latest_checkpoint
from vocseg.runs.provenance import DEMO_CAVEAT

REPORT_NAME = "report.html"
GENERATOR = "vocseg report"  # the page's <meta name="generator">: marks a file vocseg may replace
IMAGES_SUFFIX = "_images.json"
MAX_PHOTOS = 60

# What each flag means (its definition and thresholds). The cause it may have is not stated here: each
# flag's `fix` line carries the one the run's own schedule, curves and data support (reports.explain).
FLAG_SENTENCES = {
    "recipe": "R, recipe: the runs differ in how they were trained; that comes before any per-class difference.",
    "over-filled": (
        "F, over-filled: the model paints this class over more pixels than it covers (predicted area at least "
        "{area_limit:g}x the true area, or IoU down by {min_change:g} while Acc rose against the baseline), i.e. past the "
        "object's edges; the blue (false alarm) pixels in its gallery show where."
    ),
    "weak": "W, weak: the class's IoU is at least {weak_margin:g} points below the run's mIoU.",
    "memorisation": (
        "M, memorised: the model scores at least {gap:g} mIoU points higher on its training images than on val, and this "
        "class has one of the largest gaps."
    ),
}
THRESHOLDS = DEFAULT_THRESHOLDS  # vocseg compare's defaults: one object (reports.compare.Thresholds)


@dataclass
class SplitEval:
    """The latest eval result of one split in RUN/eval/, with its flags and pictures."""

    split: str
    path: Path
    result: EvalResult
    run_result: RunResult
    rows: list[dict[str, Any]] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)
    iou_chart: str = ""
    confusion_chart: str = ""


# ---------------------------------------------------------------- inputs


def check_run(run: Path) -> Path:
    if not run.is_dir():
        raise VocsegError(f"{run} is not a run folder.", "Pass the folder `vocseg train` wrote (it holds config.py and checkpoints).")
    if not (run / CONFIG_NAME).is_file():
        raise VocsegError(f"{run} has no {CONFIG_NAME}: not a run folder.", "Pass the folder `vocseg train` wrote.")
    return run


def latest_evals(run: Path) -> dict[str, Path]:
    """split -> the newest eval JSON of that split in RUN/eval/ (a TTA result counts as its own split `val (TTA)`)."""
    found: dict[str, tuple[float, Path]] = {}
    for path in sorted((run / "eval").glob("*.json")):
        if path.name.endswith(IMAGES_SUFFIX):
            continue
        raw = read_regular(path)  # a link or a FIFO at that name is not an eval result (and is never opened blocking)
        try:
            data = json.loads(raw) if raw is not None else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("per_class"), dict):
            continue
        split = str(data.get("split") or "val") + (" (TTA)" if data.get("tta") else "")
        mtime = path.lstat().st_mtime
        if split not in found or mtime > found[split][0]:
            found[split] = (mtime, path)
    order = {"val": 0, "train": 1}
    return {s: p for s, (_, p) in sorted(found.items(), key=lambda kv: (order.get(kv[0], 2), kv[0]))}


EVALUATED_BY = "evaluated_by"  # the eval JSON's key saying which command computed it


def ensure_val_eval(run: Path, *, verbose: bool = False) -> None:
    """Run `vocseg eval RUN` (val) when RUN/eval/ has no val result. The JSON says that the report
    computed it (`"evaluated_by": "vocseg report"`), so the page's note about it comes from the
    run's files, not from this invocation: a second report, or one completing a report that was
    stopped after its eval, writes the same page."""
    if "val" in latest_evals(run):
        return
    from vocseg.evaluation.evaluate import evaluate, save_outputs

    evaluation = evaluate(run, split="val", verbose=verbose)
    evaluation.result.extra[EVALUATED_BY] = "vocseg report"
    save_outputs(evaluation.result, evaluation.out_dir, evaluation.tag)  # the files of `vocseg eval RUN` (the JSON also says who computed it)


def evaluated_by_report(evals: list[SplitEval]) -> str:
    """The val eval's path when `vocseg report` computed it (see `ensure_val_eval`), else ""."""
    val = next((e for e in evals if e.split == "val"), None)
    return str(val.path) if val is not None and val.result.extra.get(EVALUATED_BY) == "vocseg report" else ""


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def flag_items(flags: list[Flag]) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """(class -> markers, one entry per kind of flag: its meaning-and-what-to-try sentence once, then each flag's numbers and fix)."""
    from vocseg.reports.compare import MARKERS

    marks: dict[str, list[str]] = {}
    kinds: dict[str, dict[str, Any]] = {}
    for flag in flags:
        marker = MARKERS.get(flag.kind, "")
        for c in flag.classes:
            if marker and marker not in marks.setdefault(c, []):
                marks[c].append(marker)
        item = kinds.setdefault(flag.kind, {"kind": flag.kind, "marker": marker, "sentence": FLAG_SENTENCES.get(flag.kind, "").format(**THRESHOLDS.to_json()), "classes": [], "details": []})
        item["classes"] += [c for c in flag.classes if c not in item["classes"]]
        item["details"].append({"message": flag.message, "fix": flag.fix})
    return marks, list(kinds.values())


def split_evals(run: Path) -> list[SplitEval]:
    """The latest eval of each split, with per-class rows (worst IoU first), flags and charts."""
    from vocseg.evaluation.charts import confusion_figure, iou_bar_figure, png_bytes

    paths = latest_evals(run)
    evals: list[SplitEval] = []
    for split, path in paths.items():
        result = load_result(path)
        run_result = load_results(path)[0]
        run_result.label = split
        evals.append(SplitEval(split, path, result, run_result))
    runs = [e.run_result for e in evals]
    flags = overfill_flags(runs, THRESHOLDS.min_change, THRESHOLDS.area_limit) + memorisation_flags(runs, THRESHOLDS.gap) + weak_flags(runs, THRESHOLDS.weak_margin)
    for e in evals:
        mine = [f for f in flags if f.run in ("", e.split) and (f.kind != "weak" or e.split == "val" or "val" not in paths)]
        marks, e.flags = flag_items(mine)
        names = list(e.result.per_class)
        for i, (name, vals) in enumerate(e.result.per_class.items()):
            pred, true = vals.get("pred_pixels"), vals.get("gt_pixels")
            ratio = pred / true if isinstance(pred, (int, float)) and isinstance(true, (int, float)) and true > 0 else None
            e.rows.append(
                {
                    "name": name,
                    "colour": pics.class_colour(i) if name in names[:21] else "#888888",
                    "IoU": _num(vals.get("IoU")),
                    "Acc": _num(vals.get("Acc")),
                    "Precision": _num(vals.get("Precision")),
                    "pred": pred,
                    "true": true,
                    "ratio": ratio,
                    "confused": most_confused_with(e.result, i),
                    "flags": marks.get(name, []),
                }
            )
        e.rows.sort(key=lambda r: (r["IoU"] is None, r["IoU"] if r["IoU"] is not None else 0.0))  # worst first, undefined last
        title = f"{Path(e.result.checkpoint).name} on {e.result.split} ({e.result.num_images} images)"
        e.iou_chart = pics.png_uri(png_bytes(iou_bar_figure(e.result, title=title)))
        if e.result.confusion is not None:
            e.confusion_chart = pics.png_uri(png_bytes(confusion_figure(e.result.confusion, names, title=title)))
    return evals


# ---------------------------------------------------------------- sections


def plan_section(run: Path) -> dict[str, Any]:
    """Recipe and plan rows, and the warnings `vocseg config` gives; a note when the run has no recipe.json."""
    from vocseg.recipe import schedule as sched
    from vocseg.recipe.recipe import Recipe, plan
    from vocseg.runs.provenance import data_source

    path = run / RECIPE_NAME
    ckpt = latest_checkpoint(run)
    section: dict[str, Any] = {"rows": [], "warnings": [], "note": "", "checkpoint": str(ckpt) if ckpt else "none yet"}
    if not path.is_file():
        section["note"] = f"{path} is missing: this run's config was not written by `vocseg config`/`train`, so no plan is shown."
        return section
    try:
        recipe = Recipe.from_json(path.read_text())
    except (OSError, ValueError, TypeError) as exc:
        section["note"] = f"{path} cannot be read ({exc})."
        return section
    try:
        p = plan(recipe)
    except VocsegError as exc:
        section["note"] = f"The plan needs the data root's split lists: {exc}"
        p = None
    rows = [
        ("model", f"{recipe.model}, crop {recipe.crop_size}"),
        ("pretrained weights", recipe.pretrained_checkpoint or "none (random init)"),
        ("data", (f"{data_source(recipe.data_root, recipe.aug, p.train_size if p else None).label}; data root {recipe.data_root}" if recipe.is_voc
                  else f"dataset {recipe.dataset!r}, its train list in {recipe.data_root}" + (f": {p.train_size} images" if p else ""))),
    ]
    if not recipe.is_voc:
        from vocseg.data.dataset import dataset_of_run

        spec = dataset_of_run(run)
        rows.append(("classes", f"{spec.num_classes}: {', '.join(spec.classes)}"))
    if p is not None:
        procs = f"{p.world_size} GPU(s) [{recipe.gpus}]" if recipe.device == "cuda" else f"{p.world_size} CPU process(es)"
        rows += [
            ("total batch", f"{procs} x {recipe.batch} = {p.total_batch}"),
            ("learning rate", f"{p.lr:g} = {p.lr_rule}; poly decay per iteration"),
            ("iterations", f"{p.max_iters} ({p.iters_per_epoch} per epoch = {p.epochs:.1f} epochs)"),
            *([("samples seen", f"{p.samples:,} = {p.ratio_to_official:.2f}x the official 40k x {sched.OFFICIAL_BATCH} ({40_000 * sched.OFFICIAL_BATCH:,})"),
               ("official 40k equals", f"{p.official_equivalent_epochs:.1f} epochs on these {p.train_size} images = {p.official_equivalent_iters} iterations at batch {p.total_batch}")]
              if recipe.is_voc else [("samples seen", f"{p.samples:,} = {p.epochs:.1f} passes over the {p.train_size} train images")]),
            ("validate / checkpoint", f"every {p.val_interval_iters} / {p.ckpt_interval_iters} iterations"),
        ]
        section["warnings"] = list(p.warnings)
    rows.append(("seed", f"{recipe.seed}{' (deterministic)' if recipe.deterministic else ''}"))
    section["rows"] = rows
    return section


def curves_section(run: Path) -> dict[str, Any]:
    """The curves picture (`RUN/curves.png`, redrawn from the log) and the val mIoU per validation."""
    from vocseg.runs.curves import CURVES_NAME, read_curves, write_curves

    curves = read_curves(run)
    if not curves:
        return {"chart": "", "miou": []}
    path = write_curves(run) or run / CURVES_NAME
    return {"chart": pics.png_uri(path.read_bytes()), "miou": [(step, curves.miou[step]) for step in sorted(curves.miou)]}


def gallery_section(evals: list[SplitEval], limit_classes: int | None = None) -> dict[str, Any]:
    """Per class, worst IoU first: its gallery entries with their pictures and numbers."""
    from vocseg.evaluation.galleries import decode_label_png
    from vocseg.inference.predict import read_rgb

    val = next((e for e in evals if e.split == "val"), None)
    if val is None:
        return {"note": "No val eval in the run's eval/ folder.", "classes": []}
    images_path = val.path.with_name(val.path.stem + IMAGES_SUFFIX)
    from vocseg.evaluation.galleries import load_gallery_document

    try:
        doc = load_gallery_document(images_path)  # shape checked: a damaged file is a note naming it, not a traceback
    except VocsegError as exc:
        return {"note": str(exc), "classes": []}
    if doc is None:  # none there, or a link (never followed) or a FIFO (never opened) at that name
        return {"note": f"{val.path.name} was written without per-image statistics: run `{command('eval', val.path.parent.parent)}` again to compute the galleries.", "classes": []}
    classes = doc.get("classes", [])
    by_iou = {r["name"]: r["IoU"] for r in val.rows}
    order = sorted(doc.get("galleries", {}), key=lambda c: (by_iou.get(c) is None, by_iou.get(c) or 0.0))
    out = []
    cache: dict[str, Any] = {}
    missing: list[str] = []
    for name in order[:limit_classes]:
        cls = classes.index(name)
        entries = []
        for entry in doc["galleries"][name]:
            image_id = entry["id"]
            info = doc["images"].get(image_id, {})
            if image_id not in cache:
                try:
                    rgb = read_rgb(Path(info["image"]))
                    label = _read_label(Path(info["label"]))
                    pred = decode_label_png(doc["predictions"][image_id])
                except (VocsegError, KeyError, OSError, TypeError, ValueError) as exc:
                    cache[image_id] = None
                    missing.append(f"{image_id} ({exc})")
                else:
                    cache[image_id] = (rgb, label, pred) if rgb.shape[:2] == label.shape == pred.shape else None
                    if cache[image_id] is None:
                        missing.append(f"{image_id} (image, label and prediction differ in size)")
            arrays = cache[image_id]
            if arrays is None:
                continue
            rgb, label, pred = arrays
            entries.append({**entry, "pictures": pics.gallery_pictures(rgb, label, pred, cls), "detail": _entry_detail(entry, label, pred, cls, classes), "accuracy": _pixel_accuracy(label, pred)})
        if entries:
            out.append({"name": name, "colour": pics.class_colour(cls), "IoU": by_iou.get(name), "entries": entries})
    note = f"Not shown (image or label not readable): {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "") if missing else ""
    return {"note": note, "classes": out, "limit": doc.get("limit"), "source": images_path.name, "legend": pics.ERROR_LEGEND}


def _read_label(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im).astype(np.uint8)


def _pixel_accuracy(label: Any, pred: Any) -> float | None:
    scored = label != 255
    n = int(scored.sum())
    return None if n == 0 else 100.0 * int((pred[scored] == label[scored]).sum()) / n


def _entry_detail(entry: dict[str, Any], label: Any, pred: Any, cls: int, classes: list[str]) -> str:
    """Where the class's pixels went (missed), or what was under the false alarm."""
    import numpy as np

    scored = label != 255
    if entry["kind"] == "missed":
        went = pred[(label == cls) & (pred != cls)]
        what = "its missed pixels were predicted as"
    else:
        went = label[(pred == cls) & (label != cls) & scored]
        what = "predicted over true"
    if went.size == 0:
        return ""
    counts = np.bincount(went, minlength=len(classes))
    top = [int(j) for j in np.argsort(-counts)[:2] if counts[j] > 0 and j < len(classes)]
    return what + " " + ", ".join(f"{classes[j]} {100 * counts[j] / went.size:.0f}%" for j in top)


def explain_section(facts: RunFacts) -> dict[str, Any]:
    """What the run's own files say before any flag: its data, its schedule and whether val was still rising."""
    demo = facts.data is not None and facts.data.kind == "demo"
    return {
        "data": facts.data.label if facts.data is not None else "",
        "schedule": schedule_note(facts),
        "trend": facts.trend.state,
        "demo": demo,
        "demo_caveat": f"{DEMO_CAVEAT}." if demo else "",
    }


def photos_section(run: Path, photos: Path) -> dict[str, Any]:
    """The model's predictions on the user's own photos: photo | outlined prediction | legend with shares."""
    from vocseg.inference.inputs import expand_inputs
    from vocseg.inference.predict import read_rgb
    from vocseg.inference.segmenter import load_model, predict_array
    from vocseg.visualization.overlays import class_shares, share_text

    if not photos.exists():
        raise VocsegError(f"--photos {photos} does not exist.", "Pass a folder of your photos (JPEG/PNG).")
    paths = [i.path for i in expand_inputs([str(photos)])]
    if not paths:
        raise VocsegError(f"--photos {photos} holds no files.", "Pass a folder of your photos (JPEG/PNG).")
    model = load_model(run, device="auto")
    items, skipped = [], []
    for path in paths[:MAX_PHOTOS]:
        try:
            rgb = read_rgb(path)
        except VocsegError as exc:
            skipped.append(exc.message)
            continue
        pred = predict_array(model, rgb)
        photo, overlay, legend = pics.photo_pictures(rgb, pred)
        shares = class_shares(pred)
        for item in legend:
            item.note = share_text(shares.get(item.name, 0.0))
        items.append({"name": path.name, "photo": photo, "overlay": overlay, "legend": legend, "background": share_text(shares.get("background", 0.0)) if "background" in shares else ""})
    more = len(paths) - MAX_PHOTOS
    return {"shots": items, "skipped": skipped, "more": max(0, more), "folder": str(photos),
            "count": photos_count_text(len(items), len(paths), photos, run)}


def photos_count_text(shown: int, total: int, folder: Path, run: Path, limit: int | None = None) -> str:
    """How many of the files in `--photos` the report shows, for the CLI line and the page:
    "60 of 150 photos (the first 60 by name; `vocseg predict DIR -c RUN` for all)" when the folder
    holds more than `limit` (default `MAX_PHOTOS`) files, else "N photos". `shown`: the photos on
    the page (files that are not images are listed as skipped instead); `total`: the files in
    `folder`; `run`: the reported run (predict without -c would take the newest run instead)."""
    limit = MAX_PHOTOS if limit is None else limit
    if total <= limit:
        return f"{shown} photo{'' if shown == 1 else 's'}"
    return f"{shown} of {total} photos (the first {limit} by name; `{command('predict', folder, '-c', run)}` for all)"


def compare_section(run: Path, other: Path) -> dict[str, Any]:
    """This run and another (run folder, eval JSON or file of runs) as `vocseg compare` computes it."""
    import tempfile

    from vocseg.reports.compare import compare_paths
    from vocseg.reports.compare_chart import compare_chart

    comparison: Comparison = compare_paths([run, other], THRESHOLDS)
    marks, items = flag_items(comparison.flags)
    rows = []
    for cls in comparison.classes:
        cells = []
        for r in comparison.runs:
            cells.append({"IoU": r.value(cls, "IoU"), "Acc": r.value(cls, "Acc"), "dIoU": comparison.delta(r, cls, "IoU") if r is not comparison.baseline else None, "dAcc": comparison.delta(r, cls, "Acc") if r is not comparison.baseline else None})
        rows.append({"name": cls, "cells": cells, "flags": marks.get(cls, [])})
    with tempfile.TemporaryDirectory() as tmp:
        chart = pics.png_uri(compare_chart(comparison, Path(tmp) / "compare.png").read_bytes())
    runs = [{"label": r.label, "split": r.split, "source": r.source, "mIoU": r.mIoU, "mAcc": r.mAcc, "dmIoU": None if r is comparison.baseline else round(r.mIoU - comparison.baseline.mIoU, 2)} for r in comparison.runs]
    return {"runs": runs, "rows": rows, "flags": items, "chart": chart, "other": str(other)}


# ---------------------------------------------------------------- the page


def output_path(run: Path, out: Path | None) -> Path:
    """RUN/report.html, or --out; never a file that vocseg did not write (or one changed since),
    never a link or a special file (`vocseg.files.check_may_write`)."""
    path = out if out is not None else run / REPORT_NAME
    if path.is_dir():
        path = path / REPORT_NAME
    from vocseg.files import check_may_write, output_named_by

    # the one rule: new, or vocseg's and unchanged; without -o the message names the default, not an -o never given
    check_may_write(path, force_option=None, **output_named_by("-o" if out is not None else None))
    return path


def render(context: dict[str, Any]) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    from vocseg.console import encodable

    # finalize: a non-UTF-8 file name shows its bytes as \xNN instead of failing the UTF-8 page.
    env = Environment(loader=PackageLoader("vocseg.reports", "templates"), autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, finalize=lambda v: encodable(v) if isinstance(v, str) else v)
    env.filters["num"] = format_value
    env.filters["signed"] = lambda v: "" if v is None else f"{v:+.2f}"
    env.filters["pixels"] = lambda v: "-" if v is None else f"{int(v):,}"
    env.filters["sortkey"] = lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
    return env.get_template("report.html.j2").render(**context)


def build_report(run: Path, *, out: Path | None = None, photos: Path | None = None, compare: Path | None = None, verbose: bool = False) -> tuple[Path, dict[str, Any]]:
    """Write the report; return its path and a summary (sections, sizes, the seconds each took)."""
    from vocseg.files import owned_write_text

    run = check_run(run)
    from vocseg.data.dataset import dataset_of_run, use_dataset

    use_dataset(dataset_of_run(run))  # legends and colours of the run's own classes
    path = output_path(run, out)
    if compare is not None:
        if not compare.exists():
            raise VocsegError(f"--compare {compare} does not exist.", "Pass another run folder, an eval JSON or a file of runs.")
        load_results(compare)  # a one-line error now, before any work is done
    timings: dict[str, float] = {}
    start = time.perf_counter()
    ensure_val_eval(run, verbose=verbose)
    timings["eval"] = time.perf_counter() - start

    def timed(name: str, fn: Any, *args: Any) -> Any:
        t = time.perf_counter()
        value = fn(*args)
        timings[name] = time.perf_counter() - t
        return value

    evals = timed("tables", split_evals, run)
    facts = timed("facts", facts_from_run, run, run_label(run))
    context = {
        "generator": GENERATOR,
        "run": str(run.resolve()),
        "run_name": run.resolve().name,
        "created": time.strftime("%Y-%m-%d %H:%M"),
        "plan": timed("plan", plan_section, run),
        "explain": explain_section(facts),
        "thresholds": THRESHOLDS,
        "curves": timed("curves", curves_section, run),
        "evals": evals,
        "gallery": timed("galleries", gallery_section, evals),
        "photos": timed("photos", photos_section, run, photos) if photos is not None else None,
        "compare": timed("compare", compare_section, run, compare) if compare is not None else None,
        "evaluated": evaluated_by_report(evals),
    }
    html = timed("render", render, context)
    owned_write_text(path, html)
    timings["total"] = time.perf_counter() - start
    summary = {
        "splits": [e.split for e in evals],
        "gallery_classes": len(context["gallery"]["classes"]),
        "gallery_images": sum(len(c["entries"]) for c in context["gallery"]["classes"]),
        "photos": len(context["photos"]["shots"]) if context["photos"] else 0,
        "photos_text": context["photos"]["count"] if context["photos"] else "0 photos",
        "bytes": len(html.encode("utf-8")),
        "seconds": timings,
        "evaluated": context["evaluated"],
    }
    return path, summary
