"""Does a folder of wheels, with the GPU machine's own packages, make vocseg installable there?

    python3 wheel_closure.py --wheels .whl --pins wheels.txt --image image-packages.txt --pyproject pyproject.toml [--remove-stale]
    python3 wheel_closure.py --pins wheels.txt --image image-packages.txt --pyproject pyproject.toml   # pins only, no wheels

Checks, for Python 3.12 (CPython) on manylinux x86-64, which is what the machine runs:
  1. every pinned NAME==VERSION has its wheel, at that version, and no name has two wheels
     (pip refuses to install both); with --remove-stale a wheel of a pinned name at another
     version (an earlier download) is deleted first;
  2. every wheel's tags fit that interpreter and platform;
  3. every requirement of every wheel (extras left out, markers evaluated for that machine) is met
     by another wheel (at a version the specifier accepts) or by a package of the image;
  4. every dependency in pyproject.toml's [project].dependencies is met the same way.
Prints one line per problem and exits 1 when there is any (0 otherwise). Reads wheels as zip
files; needs `packaging` (pip's own copy is used where it is not installed).
"""

from __future__ import annotations

import argparse
import email.parser
import sys
import zipfile
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.tags import Tag, compatible_tags, cpython_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version
except ImportError:  # pragma: no cover - pip vendors packaging
    from pip._vendor.packaging.markers import default_environment  # type: ignore[no-redef]
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.tags import Tag, compatible_tags, cpython_tags  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename  # type: ignore[no-redef]
    from pip._vendor.packaging.version import Version  # type: ignore[no-redef]

PYTHON = (3, 12)
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)] + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
# A requirement met by another distribution that installs the same module (`import cv2`).
ALIASES = {"opencv-python": {"opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}}


def machine_environment() -> dict[str, str]:
    """Marker values of the GPU machine (not of the machine running this)."""
    env = dict(default_environment())
    env.update(python_version="3.12", python_full_version="3.12.3", implementation_name="cpython", implementation_version="3.12.3",
               platform_python_implementation="CPython", sys_platform="linux", platform_system="Linux", platform_machine="x86_64", os_name="posix")
    return env


def machine_tags() -> set[Tag]:
    return set(cpython_tags(PYTHON, abis=["cp312", "abi3", "none"], platforms=PLATFORMS)) | set(compatible_tags(PYTHON, "cp312", PLATFORMS))


def read_list(path: Path) -> list[str]:
    """Lines without comments (`#` to the end) and blanks."""
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines() if line.split("#", 1)[0].strip()]


def read_pins(path: Path) -> dict[str, tuple[str, Version]]:
    """canonical name -> (name as written, version) for NAME==VERSION lines."""
    pins: dict[str, tuple[str, Version]] = {}
    for line in read_list(path):
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            raise SystemExit(f"{path}: '{line}' must pin one version (NAME==VERSION)")
        pins[canonicalize_name(req.name)] = (req.name, Version(specs[0].version))
    return pins


def pyproject_dependencies(path: Path) -> list[str]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]
    return list(tomllib.loads(path.read_text())["project"]["dependencies"])


def wheel_metadata(path: Path) -> tuple[str, Version, list[str]]:
    """(name, version, Requires-Dist lines) from the wheel's .dist-info/METADATA."""
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise ValueError(f"{path.name}: {len(names)} .dist-info/METADATA files, expected 1")
        msg = email.parser.Parser().parsestr(z.read(names[0]).decode("utf-8", "replace"))
    return msg["Name"], Version(msg["Version"]), msg.get_all("Requires-Dist") or []


def check(wheel_dir: Path | None, pins_path: Path, image_path: Path, pyproject: Path, remove_stale: bool = False) -> tuple[list[str], list[str]]:
    """(problems, notes). Problems name the package and what to do."""
    problems: list[str] = []
    notes: list[str] = []
    pins = read_pins(pins_path)
    image = {canonicalize_name(n) for n in read_list(image_path)}
    env = machine_environment()
    tags = machine_tags()

    carried: dict[str, tuple[Version, list[str], Path]] = {}  # canonical name -> (version, requires, file)
    if wheel_dir is not None:
        for path in sorted(wheel_dir.glob("*.whl")):
            try:
                _, _, _, ftags = parse_wheel_filename(path.name)
                name, version, requires = wheel_metadata(path)
            except (ValueError, zipfile.BadZipFile, KeyError) as exc:
                problems.append(f"{path.name}: not a readable wheel ({exc}); delete it and run wheels.sh again")
                continue
            key = canonicalize_name(name)
            if key in pins and version != pins[key][1]:
                if remove_stale:
                    path.unlink()
                    notes.append(f"removed {path.name}: {pins[key][0]} is pinned at {pins[key][1]}")
                else:
                    problems.append(f"{path.name}: {pins[key][0]} is pinned at {pins[key][1]} in {pins_path.name}; delete this file")
                continue
            if key in carried:
                problems.append(f"two wheels of {name}: {carried[key][2].name} and {path.name} (pip installs only one); delete one")
                continue
            if not ftags & tags:
                problems.append(f"{path.name}: built for {', '.join(sorted(str(t) for t in ftags))}, not for CPython 3.12 on manylinux x86-64")
            if key not in pins:
                notes.append(f"{path.name} is not in {pins_path.name}; it travels and is installed too")
            carried[key] = (version, requires, path)
        for key, (name, version) in pins.items():
            if key not in carried:
                problems.append(f"{name}=={version} is pinned in {pins_path.name} but has no wheel in {wheel_dir}; run wheels.sh")
    else:
        carried = {key: (version, [], pins_path) for key, (_, version) in pins.items()}

    def met(req: Requirement, needed_by: str) -> None:
        key = canonicalize_name(req.name)
        if key in carried:
            version = carried[key][0]
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                problems.append(f"{needed_by} needs {req}, but {req.name} {version} is carried: change its pin in {pins_path.name}")
        elif key in image or ALIASES.get(key, set()) & image:
            if key in ALIASES and key not in image:
                notes.append(f"{needed_by} needs {req.name}: met by the image's {', '.join(sorted(ALIASES[key] & image))} (same module)")
        else:
            problems.append(f"{req.name} (needed by {needed_by}: {req}) is neither carried nor in the image: add {req.name}==VERSION to {pins_path.name}")

    for key, (_version, requires, path) in sorted(carried.items()):
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            met(req, path.name if wheel_dir is not None else key)
    for line in pyproject_dependencies(pyproject):
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
            met(req, pyproject.name)
    return problems, notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wheels", type=Path, help="the folder of wheels (without it: the pins are checked against pyproject.toml only)")
    p.add_argument("--pins", type=Path, required=True)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--pyproject", type=Path, required=True)
    p.add_argument("--remove-stale", action="store_true", help="delete wheels of pinned names at other versions")
    args = p.parse_args(argv)
    problems, notes = check(args.wheels, args.pins, args.image, args.pyproject, args.remove_stale)
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
