"""Shared fixtures: small videos made with ffmpeg, bad files, one Ray and one Prefect test server per run, one
Prefect home for the flow commands the tests start as subprocesses, the port a service started on port 0 reports,
and a single torch thread for tiny training tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

import pipelines  # noqa: F401  (sets the quiet Prefect defaults before any test imports prefect)
from pipelines.local_server import LocalServer

# The `glscl` commands that tests run as subprocesses take the user's path: the first starts glscl's local Prefect
# server, the others reuse it. Its home is this run's own (set before any test module builds a subprocess
# environment), and the server is stopped when the run ends. Tests of the first run itself use fresh homes.
PREFECT_HOME = Path(tempfile.mkdtemp(prefix="glscl-tests-prefect-home-"))
os.environ["PREFECT_HOME"] = str(PREFECT_HOME)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the local Prefect server the run's subprocesses started, and remove its home."""
    LocalServer(PREFECT_HOME).stop()
    shutil.rmtree(PREFECT_HOME, ignore_errors=True)


def slow_seconds(item: pytest.Item) -> float:
    """What a test's `slow(seconds=N)` mark says it takes (0 for a test not marked slow)."""
    return sum(mark.kwargs.get("seconds", 30) for mark in item.iter_markers("slow"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with the most slow seconds first. `make test` runs two workers that each take whole files in this
    order (`-n 2 --dist loadfile`): the longest files start first instead of ending the run on one worker."""
    per_file: dict[Path, float] = {}
    for item in items:
        per_file[item.path] = per_file.get(item.path, 0.0) + slow_seconds(item)
    items.sort(key=lambda item: -per_file[item.path])


def make_video(path: Path, colours: list[str], seconds_each: float = 1.0, size: str = "96x64", fps: int = 10) -> Path:
    """A video showing each colour in turn for `seconds_each` seconds (h264 mp4 or whatever the suffix says)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs, labels = [], []
    for index, colour in enumerate(colours):
        inputs += ["-f", "lavfi", "-i", f"color=c={colour}:s={size}:r={fps}:d={seconds_each}"]
        labels.append(f"[{index}:v]")
    graph = f"{''.join(labels)}concat=n={len(colours)}:v=1:a=0[v]"
    codec = ["-c:v", "libvpx-vp9", "-b:v", "200k"] if path.suffix == ".webm" else ["-pix_fmt", "yuv420p"]
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", *inputs, "-filter_complex", graph, "-map", "[v]", *codec, str(path)],
        check=True,
    )
    return path


def make_bad_files(folder: Path) -> dict[str, Path]:
    """Zero-byte, garbage, truncated and audio-only files, by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    garbage = folder / "garbage.avi"
    garbage.write_bytes(b"this is not a video" * 10)
    good = make_video(folder / "whole.mp4", ["green"], seconds_each=2.0)
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:2000])
    good.unlink()
    audio = folder / "audio.mp4"
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1", str(audio)], check=True
    )
    return {"empty": empty, "garbage": garbage, "truncated": truncated, "audio": audio}


def ingest_synthetic(root: Path, n_train: int, n_val: int, seed: int):
    """Generate the synthetic ActivityNet-format clips under `root`, ingest both splits with the real ingest flow
    into `root/db`, and return that StoreConfig (needs the ray_local and prefect_server fixtures)."""
    from pipelines.configs import DemoConfig
    from pipelines.demo import ingest_config
    from pipelines.ingest import ingest_flow
    from schemas.store import StoreConfig
    from workers.synthetic.videos import SyntheticConfig, generate_synthetic_dataset

    dataset = generate_synthetic_dataset(SyntheticConfig(out_dir=root, n_train=n_train, n_val=n_val, seed=seed))
    demo = DemoConfig(out_dir=str(root), store=StoreConfig(str(root / "db")))
    assert ingest_flow(ingest_config(demo, dataset)).exit_code == 0
    return demo.store


def wait_for_health(url: str, process: subprocess.Popen, timeout: float = 120) -> dict:
    """The service's /health answer once it listens; fails when the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}: {process.stderr.read().decode()[-2000:]}")
        try:
            return httpx.get(url, timeout=5).json()
        except httpx.TransportError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def reported_port(process: subprocess.Popen, log: Path, pattern: str, timeout: float = 120) -> int:
    """The port a service told to listen on port 0 bound, read from the line of its `log` that matches `pattern`
    (one group: the port). The operating system picks the port as the service binds it, so no other process can
    take it in between, as it could a port chosen first and handed over. Fails when the service exits first."""
    deadline, text = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if found := re.search(pattern, text):
            return int(found.group(1))
        if process.poll() is not None:
            raise RuntimeError(f"exited with code {process.returncode} before listening:\n{text[-3000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"no line matching {pattern!r} within {timeout} s:\n{text[-3000:]}")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test run (starting Ray takes seconds)."""
    import ray

    from workers.ray_config import RayConfig
    from workers.ray_jobs import ensure_ray

    ensure_ray(RayConfig(num_cpus=2))
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_server():
    """A temporary Prefect API with its own database, shared by the tests that run flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def one_thread():
    """Tiny ops run fastest (and least disturbed by other load) on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


OPENAI_VALUES = {"input_resolution": 224, "context_length": 77, "vocab_size": 49408}


def openai_layout_model(name: str, seed: int):
    """An open_clip model with QuickGELU and random weights, carrying OpenAI's three extra entries as buffers, as
    OpenAI's own CLIP model does (what `glscl.weights` recognises OpenAI's weights by)."""
    import torch

    from glscl.backbone_config import open_clip_registry
    from glscl.weights import OPENAI_EXTRAS

    torch.manual_seed(seed)
    model = open_clip_registry().create_model(name, force_quick_gelu=True)
    for extra in OPENAI_EXTRAS:
        model.__dict__.pop(extra, None)
        model.register_buffer(extra, torch.tensor(OPENAI_VALUES[extra]))
    return model.eval()


def openai_torchscript_archive(path: Path) -> Path:
    """A TorchScript archive of random ViT-B-32 weights in OpenAI's layout, as OpenAI's `ViT-B-32.pt` is."""
    import torch

    torch.jit.script(openai_layout_model("ViT-B-32", seed=7)).save(str(path))
    return path
