"""The playground page in a real headless browser (Debian's chromium, driven through chromedriver's W3C
WebDriver HTTP API with urllib): type a prompt, press Run, and the streamed completion appears token by
token; pick fill-mask and the candidates table appears. The session fixture installs chromium and
chromium-driver with apt-get when they are missing (root with network to the Debian mirrors, as `make
test` runs on CI) and skips, saying why, only when that is impossible.

Set LMFORGE_SCREENSHOT=path.png to keep the page's screenshot (docs/serving.png is made this way).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import client, load, running

INSTALL = ["chromium", "chromium-driver"]


def _install() -> str | None:
    """apt-get install the browser; None on success, else why not."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine: install chromium and chromedriver yourself"
    if os.geteuid() != 0:
        return f"not root: run `sudo apt-get install -y {' '.join(INSTALL)}`"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd, limit in ((["apt-get", "update", "-qq"], 300), (["apt-get", "install", "-y", "-qq", *INSTALL], 900)):
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=limit)
            if done.returncode != 0:
                return f"`{' '.join(cmd)}` failed: {(done.stderr or done.stdout).strip()[-300:]}"
    except subprocess.TimeoutExpired as err:
        return f"`{' '.join(err.cmd)}` took over {err.timeout} s"
    return None


@pytest.fixture(scope="session")
def chromedriver() -> Iterator[str]:
    """A running chromedriver on a loopback port; its base URL."""
    if shutil.which("chromedriver") is None or shutil.which("chromium") is None:
        why = _install()
        if why is not None or shutil.which("chromedriver") is None:
            pytest.skip(f"the browser test needs Debian's chromium + chromium-driver: {why}")
    from lmforge.recipes.serve import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _call("GET", f"{url}/status")["ready"]:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("chromedriver did not start within 30 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _call(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read())["value"]
    except urllib.error.HTTPError as err:
        raise AssertionError(f"WebDriver {method} {url}: {err.read()[:500]!r}") from None


class Browser:
    """The few WebDriver commands the test needs."""

    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element reference key

    def __init__(self, driver: str) -> None:
        options = {"binary": shutil.which("chromium"),
                   "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--window-size=1200,760", "--force-device-scale-factor=1"]}
        value = _call("POST", f"{driver}/session",
                      {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}})
        self.base = f"{driver}/session/{value['sessionId']}"

    def go(self, url: str) -> None:
        _call("POST", f"{self.base}/url", {"url": url})

    def find(self, css: str) -> str:
        return _call("POST", f"{self.base}/element", {"using": "css selector", "value": css})[self.ELEMENT]

    def type(self, css: str, text: str) -> None:
        element = self.find(css)
        _call("POST", f"{self.base}/element/{element}/clear")
        _call("POST", f"{self.base}/element/{element}/value", {"text": text})

    def click(self, css: str) -> None:
        _call("POST", f"{self.base}/element/{self.find(css)}/click")

    def text(self, css: str) -> str:
        return _call("GET", f"{self.base}/element/{self.find(css)}/text")

    def attribute(self, css: str, name: str) -> str | None:
        return _call("GET", f"{self.base}/element/{self.find(css)}/attribute/{name}")

    def wait(self, check: Any, seconds: float = 30) -> Any:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            value = check()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"the page did not get there in {seconds} s; status: {self.text('#status')!r}")

    def screenshot(self) -> bytes:
        return base64.b64decode(_call("GET", f"{self.base}/screenshot"))

    def close(self) -> None:
        _call("DELETE", self.base)


def test_playground_streams_a_completion_and_shows_fill_mask(gpt_dir, bert_dir, chromedriver, tmp_path):
    from lmforge.prompting.fill_mask import fill_mask
    from lmforge.serving import ServeSettings, create_app

    model, tok = load(gpt_dir)
    browser = Browser(chromedriver)
    try:
        with running(create_app(model, tok, ServeSettings(model_name="gpt-tiny"), model_dir=gpt_dir)) as url:
            expected = client(url, None).post("/v1/completions", json={
                "prompt": "The capital of France is", "max_tokens": 24, "temperature": 0}).json()["choices"][0]["text"]
            browser.go(url + "/")
            browser.wait(lambda: "gpt-tiny" in browser.text("#model"))
            browser.type("#prompt", "The capital of France is")
            browser.type("#max-tokens", "24")
            browser.type("#temperature", "0")
            assert browser.attribute("#stream", "checked") is not None
            browser.click("#run")
            browser.wait(lambda: browser.attribute("#output", "data-done") == "true")
            assert browser.text("#completion") == expected
            status = browser.text("#status")
            assert status.startswith("first token after") and "finish: length" in status
            assert int(status.split(" chunks")[0].split()[-1]) > 1  # it arrived in pieces, as a stream
            shot = browser.screenshot()
            assert shot.startswith(b"\x89PNG")
            keep = os.environ.get("LMFORGE_SCREENSHOT")
            Path(keep or tmp_path / "playground.png").write_bytes(shot)

        model, tok = load(bert_dir)
        with running(create_app(model, tok, ServeSettings(model_name="bert-tiny"), model_dir=bert_dir)) as url:
            browser.go(url + "/")
            browser.wait(lambda: "bert-tiny" in browser.text("#model"))
            browser.click('#route option[value="fill-mask"]')
            browser.type("#prompt", "the man went to the [MASK].")
            browser.click("#run")
            browser.wait(lambda: browser.text("#status") == "1 mask(s)")
            table = browser.text("#result")
            best = fill_mask(model, tok, "the man went to the [MASK].", top_k=5)[0][0]
            assert f"{best['token']} {best['score']:.4f}" in table
    finally:
        browser.close()
