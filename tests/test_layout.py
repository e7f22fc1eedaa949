"""Each library module has an obvious test file: ``tests/test_<module>.py`` or
``tests/test_<package>_<module>.py`` (``volseg/io/markers.py`` -> ``test_markers.py`` or
``test_io_markers.py``; a subpackage's module also ``test_<subpackage>_<module>.py``). The CLI (tested through its commands) and ``__init__``/``__main__`` are
left out. A new module comes with its test file.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def library_modules() -> list[str]:
    """``package/module`` of every library module (``volseg/`` relative, no suffix)."""
    out = []
    for file in sorted((ROOT / "volseg").rglob("*.py")):
        rel = file.relative_to(ROOT / "volseg").with_suffix("")
        if rel.name in ("__init__", "__main__") or rel.parts[0] == "cli":
            continue
        out.append(rel.as_posix())
    return out


def accepted_names(module: str) -> list[str]:
    """The accepted test file names of ``module`` (``package/module`` or ``module``)."""
    parts = module.split("/")
    names = [f"test_{parts[-1]}.py"]
    if len(parts) > 1:
        names.append(f"test_{'_'.join(parts)}.py")
    if len(parts) > 2:  # a subpackage's module: models/nnunet/folder -> test_nnunet_folder.py
        names.append(f"test_{'_'.join(parts[-2:])}.py")
    return names


def missing() -> list[str]:
    tests = ROOT / "tests"
    return [m for m in library_modules() if not any((tests / n).is_file() for n in accepted_names(m))]


def test_every_module_has_its_test_file():
    lacking = missing()
    assert not lacking, ("modules without tests/test_<module>.py or tests/test_<package>_<module>.py: "
                         + ", ".join(lacking))


def test_names_follow_the_module():
    assert accepted_names("io/markers") == ["test_markers.py", "test_io_markers.py"]
    assert accepted_names("geometry") == ["test_geometry.py"]
    assert "cli/_app" not in library_modules() and "io/markers" in library_modules()
