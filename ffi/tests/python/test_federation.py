"""join_round through the Python binding against the real aggregation server: `fedp2eft serve`
on loopback (SQLite in a temp folder), a run created and this device enrolled with
`fedp2eft create-run`, one round trained and uploaded, then the finished run's PSG installed and
used by personalize. FEDP2EFT_CLI names the release binary (scripts/ffi-python-test.sh)."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

sys.path.insert(0, os.environ["FEDP2EFT_BINDINGS"])
import fedp2eft_ffi as fx  # noqa: E402

CLI = os.environ["FEDP2EFT_CLI"]
MINILM = os.environ["FEDP2EFT_MINILM"]
ADMIN = "python-binding-admin-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("server-home")
    url = f"http://127.0.0.1:{free_port()}"
    env = dict(os.environ, FEDP2EFT_ADMIN_TOKEN=ADMIN)
    proc = subprocess.Popen([CLI, "--home", str(home), "serve", "--bind", url[7:]], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("the server did not start: " + proc.stderr.read().decode())
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def create_run(server, run, model_id, layers, clients):
    out = subprocess.run(
        [CLI, "create-run", "--server", server, "--run", run, "--model-id", model_id,
         "--layers", str(layers), "--r-max", "4", "--rounds", "1", "--fraction", "1",
         "--min-completion", "1", "--enroll", ",".join(clients)],
        env=dict(os.environ, FEDP2EFT_ADMIN_TOKEN=ADMIN), check=True, capture_output=True,
        text=True)
    return {c["id"]: c["token"] for c in json.loads(out.stdout)["clients"]}


class Stages(fx.ProgressListener):
    def __init__(self):
        self.stages = set()

    def on_progress(self, progress):
        self.stages.add(progress.stage)


def test_one_round_then_the_final_psg(server):
    data = fx.emoji_benchmark_client("seen-en-0")
    p = fx.Personalizer.from_pretrained(MINILM, 8, 42)
    p.set_examples(data.train, data.test)
    tokens = create_run(server, "py-run", p.model_id(), p.num_layers(), ["seen-en-0"])
    where = fx.FederatedRun(server_url=server, run="py-run", client_id="seen-en-0", max_len=64)
    rec = Stages()
    first = p.join_round(where, tokens["seen-en-0"], rec)
    assert first.uploaded and not first.finished and first.round == 0
    assert first.num_samples == len(data.train)
    assert first.stage1_loss and first.stage2_loss and first.mean_lambda > 0
    assert {"features", "train"} <= rec.stages, rec.stages
    assert not p.has_psg()
    # Every selected client reported: the round closed and the run (R = 1) is over.
    last = p.join_round(where, tokens["seen-en-0"], None)
    assert last.finished and not last.uploaded and last.round == 1
    assert p.has_psg()
    report = p.personalize(2, fx.PersonalizeOptions(epochs=1, batch_size=16,
                                                    learning_rate=1e-3, out_dir=None), None)
    assert report.r_max == 4 and report.total_rank == 2 * p.num_layers()


def test_server_errors_are_typed(server):
    p = fx.Personalizer.from_pretrained(MINILM, 8, 42)
    data = fx.emoji_benchmark_client("seen-en-1")
    p.set_examples(data.train, data.test)
    tokens = create_run(server, "py-run-2", p.model_id(), p.num_layers(), ["seen-en-1"])
    where = fx.FederatedRun(server_url=server, run="py-run-2", client_id="seen-en-1", max_len=64)
    with pytest.raises(fx.FedError.Server) as e:
        p.join_round(where, "wrong-token-" + tokens["seen-en-1"][:4], None)
    assert e.value.status == 401
    # A run for another model: refused before any training.
    other = fx.Personalizer.from_pretrained(MINILM, 3, 42)
    other.set_examples([fx.Example(text="hi", label=0)], [fx.Example(text="yo", label=1)])
    with pytest.raises(fx.FedError.Model):
        other.join_round(where, tokens["seen-en-1"], None)
