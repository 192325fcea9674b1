"""The README's Python API example runs, as written, against a tiny bundle."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _runtime_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    return next(b for b in blocks if "from edgetl.runtime import load" in b)


def test_the_readme_python_api_example_runs(tiny_run, capsys):
    _, run, _, images, _ = tiny_run
    first, second = sorted((images / "crack").glob("*.png"))[:2]
    code = _runtime_example()
    for placeholder, real in {
        "runs/line3/bundle/intel-cpu": run.root / "bundle" / "intel-cpu",
        "part_0001.png": first,
        "part_0002.png": second,
        "incoming/": images,
    }.items():
        assert f'"{placeholder}"' in code, placeholder
        code = code.replace(f'"{placeholder}"', repr(str(real)))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("openvino-CPU ") and len(printed) == 3
    assert str(first) in printed[1] and (" ok " in printed[1] or " reject " in printed[1])
    assert all(Path(p).is_file() for p in namespace["rejected"])
