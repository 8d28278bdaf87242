"""The README's own-model example works as printed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_own_model_example_runs_in_a_local_run(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(# mymodel\.py.*?)```", readme, re.S)
    assert block is not None, "the README's model example is gone"
    (tmp_path / "mymodel.py").write_text(block.group(1))
    (tmp_path / "test_inputs.json").write_text(json.dumps({"id": "mine", "input": {}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WEBHOOK_"))}
    env.update({"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "MODEL": "mymodel:build",
                "STATE_DIR": str(tmp_path / "state"), "OUTPUT_DIR": str(tmp_path / "out")})
    done = subprocess.run([sys.executable, "-m", "app", "run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    image = Path(result["output"]["image"])
    assert image == tmp_path / "out" / "mine" / "0.png"
    assert image.read_bytes() == b"...png bytes..."


def run_example(tmp_path: Path, marker: str, spec: str, job_input: dict[str, object],
                **settings: str) -> object:
    readme = (ROOT / "README.md").read_text()
    block = re.search(rf"```python\n(# {re.escape(marker)}.*?)```", readme, re.S)
    assert block is not None, f"the README's {marker} example is gone"
    (tmp_path / marker).write_text(block.group(1))
    (tmp_path / "test_inputs.json").write_text(json.dumps({"id": "mine", "input": job_input}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "WEBHOOK_"))}
    env.update({"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "MODEL": spec,
                "STATE_DIR": str(tmp_path / "state"), "OUTPUT_DIR": str(tmp_path / "out"),
                **settings})
    done = subprocess.run([sys.executable, "-m", "app", "run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_async_example_runs_in_a_local_run(tmp_path: Path) -> None:
    result = run_example(tmp_path, "fetcher.py", "fetcher:build", {"question": "why"},
                         CONCURRENCY="32")
    assert result == {"id": "mine", "output": {"answer": "WHY"}}


def test_the_streaming_example_runs_in_a_local_run(tmp_path: Path) -> None:
    result = run_example(tmp_path, "tokens.py", "tokens:build", {"text": "a b c"},
                         STREAM_AGGREGATE="true")
    assert result == {"id": "mine", "output": [{"token": "a"}, {"token": "b"}, {"token": "c"}],
                      "streamed": True}
