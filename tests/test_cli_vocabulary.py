"""The CLI's vocabulary (docs/cli.md): one option name means one thing in every command, every
command's --help groups its options and lists fixed choices, docs/cli.md lists every option, and
the old spellings still work with a deprecation line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from vocseg.cli import app
from vocseg.commands.options import DEPRECATED, replace_deprecated

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

# Option names whose help differs between commands on purpose: the same idea, said for what the command does.
INTENDED = {
    "--out": "where the command writes: a config file (config), an .onnx file (export), an HTML page (report), a folder (eval, predict)",
    "--json": "what is written as JSON: the eval result (eval) or the comparison (compare)",
    "--aug": "prepare: also get and convert SBD; config/train: train on it",
    "--gpus": "resume: default the run's",
    "--nproc": "resume: default the run's",
    "--nnodes": "resume: default the run's",
    "--log-to": "resume: from this resume on, recorded in the run folder",
}


def commands() -> dict[str, Any]:
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def records() -> dict[str, dict[str, str]]:
    """option name -> command -> its help line as shown: names, type (choices, range), help, default."""
    out: dict[str, dict[str, str]] = {}
    for name, cmd in commands().items():
        ctx = cmd.make_context(name, [], resilient_parsing=True)
        for param in cmd.get_params(ctx):
            if param.param_type_name != "option" or param.hidden or "--help" in param.opts:
                continue
            record = param.get_help_record(ctx)
            assert record is not None
            for opt in param.opts:
                if opt.startswith("--"):
                    out.setdefault(opt, {})[name] = " ".join(record[0].split()) + " :: " + " ".join(record[1].split())
    return out


def test_the_same_option_name_means_the_same_thing_everywhere() -> None:
    differing = {}
    for opt, per_command in records().items():
        if opt in INTENDED or len(per_command) < 2:
            continue
        if len({value for value in per_command.values()}) > 1:
            differing[opt] = per_command
    assert not differing, "\n".join(f"{opt}: {per}" for opt, per in differing.items())


def test_the_intended_exceptions_are_still_shared() -> None:
    shared = {opt for opt, per in records().items() if len(per) > 1}
    assert set(INTENDED) <= shared, set(INTENDED) - shared  # an exception no longer needed is removed


def test_the_model_is_checkpoint_and_the_output_out_everywhere() -> None:
    by_name = records()
    assert set(by_name["--checkpoint"]) == {"eval", "predict", "export"}
    assert set(by_name["--out"]) >= {"config", "eval", "predict", "export", "report"}
    for old in ("--num-workers", "--verbose", "--output-dir"):
        assert old not in by_name, old  # only as a deprecated spelling, hidden


@pytest.mark.parametrize("name", sorted(commands()))
def test_help_groups_options_and_lists_choices(cli, name: str) -> None:
    r = cli(name, "--help")
    assert r.code == 0, r.err
    sections = re.findall(r"^(\w[\w ]*):$", r.out, flags=re.M)
    assert sections[0] in ("Arguments", "Options")
    assert len(set(sections) - {"Arguments", "Options"}) >= 1, r.out  # grouped, not one flat list
    for cmd_name, choices in {"predict": "<whole|slide>", "train": "<auto|slurm|none>", "config": "<20k|40k>", "export": "<onnx>"}.items():
        if cmd_name == name:
            assert choices in r.out


def test_docs_cli_lists_every_option() -> None:
    text = DOCS.read_text()
    missing = [opt for opt in records() if f"`{opt}" not in text]
    assert not missing, missing
    for table in DEPRECATED.values():
        for old, new in table.items():
            assert f"`{old}`" in text and f"`{new}`" in text, old


def test_old_spellings_are_replaced_with_one_line_each() -> None:
    args, notes = replace_deprecated("eval", ["RUN", "-v", "--num-workers=2", "--verbose", "--", "-v"])
    assert args == ["RUN", "--log", "--workers=2", "--log", "--", "-v"]
    assert len(notes) == 3 and all(n.startswith("deprecated: `vocseg eval ") for n in notes)
    assert replace_deprecated("compare", ["-v"]) == (["-v"], [])


def test_an_old_spelling_still_works(cli, tmp_path: Path) -> None:
    r = cli("prepare", "--check", "--data-root", tmp_path / "none", "--force")
    assert "deprecated: `vocseg prepare --force` is now `--redo`" in r.err
    assert "No such option" not in r.err


def test_one_parser_reads_a_model_reference(tmp_path: Path) -> None:
    from vocseg.errors import VocsegError
    from vocseg.recipe.official import ModelRef

    ref = ModelRef.parse("official:upernet-r50-40k")
    assert ref.is_official and ref.key == "upernet-r50-40k" and ref.path is None and ref.official.preset == "r50"
    onnx = ModelRef.parse(tmp_path / "m.ONNX")
    assert onnx.is_onnx and onnx.path == tmp_path / "m.ONNX" and onnx.key is None
    with pytest.raises(VocsegError, match="Unknown official checkpoint official:upernet-r18"):
        ModelRef.parse("official:upernet-r18")
    with pytest.raises(VocsegError, match="vocseg export -c RUN"):
        ModelRef.parse("m.onnx", onnx=False, command="export")


def test_one_device_rule() -> None:
    import torch

    from vocseg.commands.recipe_options import device_flags
    from vocseg.errors import VocsegError

    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert device_flags(None, None) == device_flags("auto", None) == {"device": auto}
    assert device_flags(None, "6,7") == {"device": "cuda"}  # GPUs named: a GPU config, written anywhere
    assert device_flags("cuda:3", None) == {"device": "cuda", "gpus": "3"}
    assert device_flags("cpu", None) == {"device": "cpu"}
    with pytest.raises(VocsegError, match="name different GPUs"):
        device_flags("cuda:3", "1")


@pytest.mark.parametrize("name", sorted(commands()))
def test_help_shows_placeholders_not_type_names(cli, name: str) -> None:
    """Trial 2, item 10: `--workers N`, `IMAGE...`, `--lr X`, not Typer's `<int range>`,
    `<list[str]>`, `<float>`; docs/cli.md's value column shows the same placeholders."""
    r = cli(name, "--help")
    assert r.code == 0, r.err
    assert not re.search(r"<(int|float|path|str|list\[)", r.out), r.out
    usage = r.out.splitlines()[0]  # positional arguments by what they are (RUN, CONFIG, MODEL), never a Python name
    assert not re.search(r"\[[a-z_]+\]|\b[a-z]+_[a-z_]+\b", usage.split("[OPTIONS]", 1)[-1]), usage
    docs = DOCS.read_text()
    for opt, placeholder in re.findall(r"^\s+(?:-\w, )?(--[\w-]+) ([A-Z][\w=.]*)\b", r.out, flags=re.M):
        if placeholder in ("N", "X", "PATH", "TEXT"):
            assert re.search(rf"^\| (?:`-\w`, )?`{opt}`[^|]* \| {placeholder} \|", docs, flags=re.M), (opt, placeholder)


def test_predict_help_names_images_and_the_default_model(cli) -> None:
    r = cli("predict", "--help")
    text = " ".join(r.out.split())
    assert "Usage: vocseg predict [OPTIONS] {IMAGE}..." in text and "IMAGE... Image or video files" in text
    assert "Default: the newest trained run under runs/" in text and "was --batch" not in text
    assert "--workers N" in " ".join(cli("eval", "--help").out.split())
