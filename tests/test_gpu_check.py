"""bench/gpu_check.py: its dry run passes every item with a console that shows only the result lines,
and a host without Ray gets FAIL lines that say how to bring it, or has the wheels installed and the
check run again on them."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
ITEMS = ("train", "zero3-odd-eval", "score", "eval", "steer", "throughput", "score-speed")


def _run(args: list[str], tmp_path: Path, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """The check from TMP_PATH (outside the checkout), its temporary folders (kept when an item fails) in TMP_PATH."""
    env = {**(env or os.environ), "TMPDIR": str(tmp_path)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)


def _without_ray(tmp_path: Path) -> dict:
    """An environment whose `import ray` fails, as on the GPU image: a package named ray that raises first on the path."""
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {k: v for k, v in os.environ.items() if k != "GOALRM_GPU_CHECK_INSTALLED"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path / "shadow"), os.environ.get("PYTHONPATH")) if p)
    return env


def _fake_ray_wheel(folder: Path) -> None:
    """A wheel whose ray package imports with an error naming it, so that the check's second run shows which ray it found."""
    folder.mkdir()
    with zipfile.ZipFile(folder / "ray-0.0.1-py3-none-any.whl", "w") as whl:
        whl.writestr("ray/__init__.py", "raise ImportError('the ray of the test wheel')\n")
        whl.writestr("ray-0.0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: ray\nVersion: 0.0.1\n")
        whl.writestr("ray-0.0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr("ray-0.0.1.dist-info/RECORD", "")


def test_relative_gap_is_absolute_near_one_and_relative_for_large_values():
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    assert gpu_check.relative_gap([0.5, 0.2], [0.5, 0.25]) == pytest.approx(0.05)
    assert gpu_check.relative_gap([210.0, -3.0], [200.0, -3.0]) == pytest.approx(0.05)
    with pytest.raises(gpu_check.Failed, match="2 values against 1"):
        gpu_check.relative_gap([1.0, 2.0], [1.0])


def _results(stdout: str) -> tuple[list[str], str]:
    *items, summary = stdout.splitlines()
    return items, summary


def test_without_ray_or_wheels_every_item_fails_saying_how_to_bring_them(tmp_path):
    proc = _run(["--device", "cpu", "--tiny", "--wheels", str(tmp_path / "none")], tmp_path, env=_without_ray(tmp_path))
    items, summary = _results(proc.stdout)
    assert [line.split(":")[0] for line in items] == [f"FAIL {name}" for name in ITEMS], proc.stdout + proc.stderr
    assert all("holds no wheels" in line and "../shared/gpu-wheels/" in line and "--wheels DIR" in line for line in items)
    assert summary.startswith("gpu_check: 0 passed, 7 failed in ") and proc.returncode == 1
    assert proc.stderr == ""


@pytest.mark.slow  # pip, and the check started twice
def test_wheels_are_installed_into_the_site_and_the_check_runs_again_on_them(tmp_path):
    _fake_ray_wheel(tmp_path / "wheels")
    site = tmp_path / "site"
    args = ["--device", "cpu", "--tiny", "--wheels", str(tmp_path / "wheels"), "--site", str(site)]
    proc = _run(args, tmp_path, env=_without_ray(tmp_path))
    items, summary = _results(proc.stdout)
    assert (site / "ray" / "__init__.py").exists(), proc.stdout + proc.stderr
    # the second run imported the installed ray (SITE first on the path), and did not install again
    assert all(line.endswith(f"into {site}: the ray of the test wheel") for line in items), items
    assert len(items) == 7 and summary.startswith("gpu_check: 0 passed, 7 failed") and proc.returncode == 1


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dry_run_passes_every_item_and_prints_only_the_results(tmp_path):
    proc = _run(["--device", "cpu", "--tiny"], tmp_path, timeout=840)
    items, summary = _results(proc.stdout)
    assert [line.split(":")[0] for line in items] == [f"PASS {name}" for name in ITEMS], proc.stdout + proc.stderr[-3000:]
    assert re.fullmatch(r"gpu_check: 7 passed, 0 failed in \d+ s, device cpu \(\d+ cores\), torch .*", summary), summary
    assert proc.returncode == 0
    assert proc.stderr == ""  # Ray, DeepSpeed and the workers wrote to the log
