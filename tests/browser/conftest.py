"""JupyterLab on localhost with a token, and Debian's Chromium driven by Playwright."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("EDITHURT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """``(base_url, token, folder)``: a JupyterLab server on the project's environment, its
    root a scratch folder the tests put notebooks in (the committed ones are never opened,
    so JupyterLab's autosave cannot write outputs into them)."""
    if not Path(CHROMIUM).exists():
        # skipped on a machine without a browser, unless asked for (CI installs Chromium and asks)
        why = (f"no Chromium at {CHROMIUM}: `apt-get install chromium` (as .ci/run does), or set "
               "EDITHURT_CHROMIUM to a Chromium binary")
        if os.environ.get("EDITHURT_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("lab")
    settings = tmp_path_factory.mktemp("jupyter")
    port, token = _free_port(), os.urandom(16).hex()
    # every cell rendered, not only those on screen (JupyterLab 4 hides the others), so that a
    # widget in the middle of a long notebook can be found and driven
    tracker = settings / "lab-settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none"}')
    notices = settings / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notices.parent.mkdir(parents=True)
    notices.write_text('{"fetchNews": "false", "checkForUpdates": false, "doNotDisturbMode": true}')
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(settings / "config"), "JUPYTER_RUNTIME_DIR": str(settings / "run"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings / "lab-settings"), "JUPYTERLAB_WORKSPACES_DIR": str(settings / "ws")}
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
                             "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                             *(["--allow-root"] if os.geteuid() == 0 else [])],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(settings / "lab.log", "w"))
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > end:
                proc.kill()
                pytest.fail(f"JupyterLab did not start: {(settings / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.3)
    yield base, token, folder
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()
