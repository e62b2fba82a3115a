"""`lmforge serve` as a process: it prints where it listens, SIGTERM lets the streams in flight finish and
then exits 0, and bad flags fail with one message and exit code 2."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import client

REPO = Path(__file__).resolve().parents[2]


def start(model_dir: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", "--model", str(model_dir), "--port", "0",
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    line = proc.stdout.readline()  # printed once the socket listens
    match = re.search(r"on (http://127\.0\.0\.1:\d+) ", line)
    if match is None:
        proc.kill()
        raise AssertionError(f"no address in {line!r}: {proc.stdout.read()}")
    return proc, match.group(1)


@pytest.fixture(scope="module")
def slow_gpt(gpt_dir: Path, tmp_path_factory) -> Path:
    """A decoder big enough that a 200-token stream takes a while on one thread (H=256)."""
    import shutil

    import torch

    from lmforge import Model

    d = tmp_path_factory.mktemp("gpt-slow")
    torch.manual_seed(0)
    Model.from_preset("gpt-tiny", head="clm", vocab_size=50257, max_positions=256, num_layers=2, hidden_size=256,
                      num_heads=4, intermediate_size=1024).save_pretrained(d)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(gpt_dir / name, d / name)
    return d


def test_sigterm_drains_streams_in_flight_then_exits_0(slow_gpt):
    proc, url = start(slow_gpt)
    try:
        http = client(url, None)
        body = {"prompt": "Once", "max_tokens": 200, "temperature": 0, "stream": True}
        events = []
        with http.stream("POST", "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            for line in lines:
                if line.startswith("data: "):
                    events.append(line)
                    break
            proc.send_signal(signal.SIGTERM)  # the stream has ~200 tokens to go
            time.sleep(0.3)
            with pytest.raises(Exception):  # no new connections once draining
                client(url, None).get("/health", timeout=2)
            events += [line for line in lines if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        text = "".join(c["choices"][0]["text"] for c in chunks)
        assert proc.wait(60) == 0
        log = proc.stdout.read()
        assert "Waiting for connections to close" in log  # the stream was still open at SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    from lmforge.recipes.loading import load_model_and_tokenizer
    from lmforge.generation import generate

    model, tok = load_model_and_tokenizer(slow_gpt)
    import torch

    ref = generate(model, torch.tensor([tok("Once", add_special_tokens=False)["input_ids"]]), max_new_tokens=200,
                   return_prompt=False)[0]
    assert text == tok.decode(ref.tolist())  # every token arrived


def test_bad_flags_exit_2_with_one_message(gpt_dir, tmp_path, capsys):
    from lmforge import cli
    from lmforge.recipes.serve import bind

    assert cli.main(["serve", "--model", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["serve", "--model", str(gpt_dir), "--max-batch", "0"]) == 2
    assert "--max-batch must be >= 1" in capsys.readouterr().err
    taken = bind("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--model", str(gpt_dir), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    finally:
        taken.close()
