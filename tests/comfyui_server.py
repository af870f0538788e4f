"""A real ComfyUI server for the end-to-end and browser tests (conftest's ``comfyui`` fixture).

Which ComfyUI:

- ``COMFYUI_PATH``: your own checkout, run in place with ``COMFYUI_PYTHON`` (default: its
  ``venv``/``.venv`` when it has one, else this interpreter);
- otherwise the ComfyUI 0.8.0 vendored in ``../shared/vendor/comfyui``, copied to a temporary
  folder first (it is read-only in CI and ComfyUI writes beside itself), run with this interpreter;
- otherwise none: the tests that need it are skipped, with the reason. Under ``JOINT_CI=1``
  (``.ci/run`` sets it) they fail instead, so CI never skips them.

The server runs from a temporary ``--base-directory``: its ``custom_nodes/joint`` is a symlink to
this checkout (the clone-install path), ``extra_model_paths.yaml`` registers ``<root>/models`` for
``naturalness`` and ``checkpoints`` models, and the checkout's own folders are not touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from conftest import REPO, SHARED, unavailable

VENDORED = SHARED / "vendor" / "comfyui"
START_TIMEOUT = float(os.environ.get("JOINT_COMFYUI_START_TIMEOUT", "600"))   # 40 s idle, minutes under load


def locate(workdir: Path) -> tuple:
    """(ComfyUI folder, its Python): COMFYUI_PATH, else a copy of the vendored one in ``workdir``."""
    if os.environ.get("COMFYUI_PATH"):
        path = Path(os.environ["COMFYUI_PATH"])
        if not (path / "main.py").is_file():
            unavailable(f"COMFYUI_PATH={path} is not a ComfyUI checkout (no main.py)")
        python = os.environ.get("COMFYUI_PYTHON")
        if not python:
            cands = [path / v / exe for v in ("venv", ".venv") for exe in ("bin/python", "Scripts/python.exe")]
            python = next((str(c) for c in cands if c.is_file()), sys.executable)
        return path, python
    if not (VENDORED / "main.py").is_file():
        unavailable(f"no ComfyUI: set COMFYUI_PATH to a ComfyUI checkout, or provide the vendored copy "
                    f"in {VENDORED}")
    copy = workdir / "ComfyUI"
    shutil.copytree(VENDORED, copy, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for folder, _, _ in os.walk(copy):          # the original is read-only; its copy must not be
        os.chmod(folder, os.stat(folder).st_mode | 0o700)
    return copy, os.environ.get("COMFYUI_PYTHON", sys.executable)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running ComfyUI: ``url``, ``root`` (the test's folder), ``base`` (its base directory),
    ``models`` (registered model folders: ``naturalness/``, ``checkpoints/``), ``path`` and
    ``python`` (the ComfyUI and interpreter it runs), ``log``."""

    def __init__(self, url: str, root: Path, path: Path, python: str, log: Path, proc: subprocess.Popen):
        self.url, self.root, self.path, self.python, self.log, self.proc = url, root, path, python, log, proc
        self.base = root / "base"
        self.models = root / "models"

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            body = r.read()
        try:
            return json.loads(body)
        except ValueError:
            return body.decode("utf-8", "replace")

    def post(self, path: str, data: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path} -> {e.code}: {e.read().decode()[:3000]}") from None

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """The history entry of a queued prompt, once it finished (success or error)."""
        end = time.time() + timeout
        while time.time() < end:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                if hist[prompt_id]["status"].get("status_str") in ("success", "error"):
                    return hist[prompt_id]
            if self.proc.poll() is not None:
                raise AssertionError("ComfyUI exited:\n" + self.tail())
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout:.0f} s:\n" + self.tail())

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        """Queue an API-format prompt and wait for its history entry."""
        pid = self.post("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})["prompt_id"]
        return self.wait(pid, timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def scored_images(self) -> int:
        """How many images the pack's models have run on so far (its 'joint: ... scored N' log lines)."""
        return sum(int(m) for m in re.findall(r"joint: .* scored (\d+) image", self.log_text()))


@contextmanager
def start(root: Path) -> Iterator[Server]:
    """Start ComfyUI on a free port from a fresh base directory under ``root``; stop it after."""
    path, python = locate(root)
    base = root / "base"
    (base / "custom_nodes").mkdir(parents=True)
    try:
        os.symlink(REPO, base / "custom_nodes" / "joint", target_is_directory=True)
    except OSError:                     # no symlinks (Windows without developer mode): copy
        shutil.copytree(REPO, base / "custom_nodes" / "joint",
                        ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info"))
    for sub in ("naturalness", "checkpoints"):
        (root / "models" / sub).mkdir(parents=True)
    (root / "extra_model_paths.yaml").write_text(
        f"joint_tests:\n    base_path: {root.as_posix()}\n    naturalness: models/naturalness\n"
        "    checkpoints: models/checkpoints\n")
    # the front end's first-visit templates dialog would cover the canvas (the tests open it
    # themselves), and the minimap would cover the pictures
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}))
    port = _free_port()
    log = root / "comfyui.log"
    env = dict(os.environ, JOINT_HOME=str(root / "joint-home"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("JOINT_MODEL", None)
    cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base), "--extra-model-paths-config", str(root / "extra_model_paths.yaml"),
           "--disable-auto-launch", "--disable-all-custom-nodes", "--whitelist-custom-nodes", "joint"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=path, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", root, path, python, log, proc)
    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None:
                # the last one: the import that killed it (ComfyUI logs optional ones it survives,
                # e.g. comfy_kitchen's "No module named 'torch_npu'", before it)
                missing = (re.findall(r"No module named '([^']+)'", server.log_text()) or [None])[-1]
                if missing:
                    reqs = (path if os.environ.get("COMFYUI_PATH") else VENDORED) / "requirements.txt"
                    unavailable(f"ComfyUI cannot start here: no module {missing!r} in {python}; install "
                                f"ComfyUI's requirements into it: pip install -r {reqs} (all but the torch, "
                                "torchvision and torchaudio lines)")
                raise AssertionError(f"ComfyUI exited with {proc.returncode}:\n" + server.tail())
            try:
                server.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.time() - t0 > START_TIMEOUT:
                    raise AssertionError(f"ComfyUI did not come up in {START_TIMEOUT:.0f} s:\n"
                                         + server.tail()) from None
                time.sleep(1)
        print(f"\nComfyUI ({path}) ready in {time.time() - t0:.0f} s at {server.url}", file=sys.stderr)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def build_sd15_checkpoint(server: Server, name: str = "v1-5-pruned-emaonly-fp16.safetensors") -> Path:
    """A random-weight checkpoint that ComfyUI's CheckpointLoaderSimple takes for SD 1.5, small
    enough to sample on a CPU in seconds (one UNet level, TAESD as its VAE; the text encoder is
    CLIP-L's full size, which ComfyUI fixes). Built by ComfyUI's own classes (tests/comfyui_sd15.py,
    run with the server's interpreter), into the registered ``checkpoints`` folder."""
    out = server.models / "checkpoints" / name
    if not out.is_file():
        tmp = out.with_suffix(".part")
        res = subprocess.run([server.python, str(Path(__file__).with_name("comfyui_sd15.py")), str(tmp)],
                             cwd=server.path, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"building the test checkpoint failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        tmp.replace(out)
    return out
