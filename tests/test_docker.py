"""docker/: every file a Dockerfile copies exists, and every edgetl command the docs run is a real command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command

from edgetl.cli import app

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))


def test_the_three_images_exist():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.cpu", "Dockerfile.gpu", "Dockerfile.jetson"}
    assert (ROOT / "docker" / "README.md").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_files_exist(dockerfile: Path):
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+\s*$", dockerfile.read_text(), flags=re.MULTILINE)
    assert copies
    for sources in copies:
        for source in sources.split():
            assert (ROOT / source).exists(), f"{dockerfile.name} copies {source}, which is missing"
    text = dockerfile.read_text()
    assert 'ENTRYPOINT ["edgetl"]' in text


def _commands() -> set[str]:
    group = get_command(app)
    names = set(group.commands)  # type: ignore[attr-defined]
    return names


def test_documented_commands_exist():
    commands = _commands()
    text = "\n".join(p.read_text() for p in [ROOT / "docker" / "README.md", *DOCKERFILES])
    used = re.findall(r"edgetl-(?:cpu|gpu|jetson)\s+\\?\s*\n?\s*([a-z]+)", text)
    used += re.findall(r"\bedgetl (?!-)([a-z]+)", text)
    assert {"compile", "verify", "bench", "build"} <= set(used)
    for command in used:
        assert command in commands, f"docker docs run 'edgetl {command}', which does not exist"
