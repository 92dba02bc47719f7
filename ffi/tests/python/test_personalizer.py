"""The Python binding of fedp2eft-ffi against the built Linux library: a real model
(all-MiniLM-L6-v2) personalised on a real client of the emoji benchmark, progress callbacks,
cancellation from the listener, and the typed errors. Run by scripts/ffi-python-test.sh, which
builds the library, generates the binding and sets FEDP2EFT_BINDINGS and FEDP2EFT_MINILM."""
import os
import sys
import threading

import pytest

sys.path.insert(0, os.environ["FEDP2EFT_BINDINGS"])
import fedp2eft_ffi as fx  # noqa: E402

MINILM = os.environ["FEDP2EFT_MINILM"]
FAST = fx.PersonalizeOptions(epochs=1, batch_size=16, learning_rate=1e-3, out_dir=None)


class Recorder(fx.ProgressListener):
    def __init__(self, cancel_on=None, personalizer=None):
        self.events = []
        self.thread_ids = set()
        self.cancel_on = cancel_on
        self.personalizer = personalizer

    def on_progress(self, progress):
        self.events.append(progress)
        self.thread_ids.add(threading.get_ident())
        if self.cancel_on and progress.stage == self.cancel_on:
            self.personalizer.cancel()


@pytest.fixture(scope="module")
def client():
    data = fx.emoji_benchmark_client("seen-en-0")
    assert data.language == "en" and data.train and data.test
    return data


@pytest.fixture()
def personalizer(client):
    p = fx.Personalizer.from_pretrained(MINILM, 8, 42)
    p.set_examples(client.train, client.test)
    return p


def test_personalize_reports_ranks_accuracy_and_progress(personalizer, client, tmp_path):
    rec = Recorder()
    opts = fx.PersonalizeOptions(epochs=1, batch_size=16, learning_rate=1e-3, out_dir=str(tmp_path))
    report = personalizer.personalize(2, opts, rec)
    layers = personalizer.num_layers()
    assert layers == 38
    assert report.total_rank == 2 * layers == sum(r.rank for r in report.ranks)
    assert len(report.ranks) == layers
    assert 0.0 <= report.accuracy_before <= 1.0 and 0.0 <= report.accuracy_after <= 1.0
    assert report.test_examples == len(client.test)
    assert report.train_steps >= 1 and report.seconds > 0
    stages = {e.stage for e in rec.events}
    assert {"train", "evaluate"} <= stages, stages
    train = [e for e in rec.events if e.stage == "train"]
    assert train[-1].done == train[-1].total and all(e.loss is not None for e in train)
    # Callbacks arrive on the calling thread.
    assert rec.thread_ids == {threading.get_ident()}
    assert os.path.isfile(os.path.join(report.merged_dir, "model.safetensors"))
    assert os.path.isfile(os.path.join(report.adapter_dir, "adapter_config.json"))


def ieee_gradual_underflow():
    """Whether this thread keeps subnormal floats, as Python (IEEE 754) expects: a subnormal
    result and a subnormal input both survive."""
    tiny, sub = sys.float_info.min, float.fromhex("0x1p-1060")
    return tiny * 0.5**10 > 0.0 and sub * 1.0 == sub


def test_the_callers_floating_point_mode_is_kept(personalizer):
    # The library flushes subnormals while it computes (fedp2eft_core::runtime); the app's
    # thread gets its own mode back afterwards, and its listener runs in that mode.
    assert ieee_gradual_underflow()

    class Probe(fx.ProgressListener):
        seen = []

        def on_progress(self, progress):
            self.seen.append(ieee_gradual_underflow())

    probe = Probe()
    personalizer.personalize(1, FAST, probe)
    assert probe.seen and all(probe.seen), "the listener ran with subnormals flushed"
    assert ieee_gradual_underflow(), "personalize left the calling thread flushing subnormals"


def test_cancel_from_the_listener_stops_the_run(personalizer):
    rec = Recorder(cancel_on="train", personalizer=personalizer)
    with pytest.raises(fx.FedError.Cancelled):
        personalizer.personalize(2, FAST, rec)
    train = [e for e in rec.events if e.stage == "train"]
    assert len(train) == 1, "the run went on after cancel()"
    # The personalizer is usable again afterwards.
    report = personalizer.personalize(1, FAST, None)
    assert report.total_rank == personalizer.num_layers()


def test_cancel_from_another_thread(personalizer):
    started = threading.Event()

    class Waiter(fx.ProgressListener):
        def on_progress(self, progress):
            started.set()

    def stop():
        started.wait(60)
        personalizer.cancel()

    t = threading.Thread(target=stop)
    t.start()
    with pytest.raises(fx.FedError.Cancelled):
        personalizer.personalize(2, fx.PersonalizeOptions(epochs=50, batch_size=16,
                                                          learning_rate=1e-3, out_dir=None), Waiter())
    t.join()


def test_typed_errors(personalizer, client):
    with pytest.raises(fx.FedError.InvalidBudget) as e:
        personalizer.personalize(0, FAST, None)
    assert e.value.budget == 0
    with pytest.raises(fx.FedError.InvalidBudget):
        personalizer.personalize(10_000, FAST, None)
    with pytest.raises(fx.FedError.Model):
        fx.Personalizer("/nonexistent/base", None)  # the primary constructor, `new`
    with pytest.raises(fx.FedError.Model):
        fx.Personalizer.from_pretrained("/nonexistent/model.e5s1", 8, 0)
    with pytest.raises(fx.FedError.Data):
        personalizer.set_examples([fx.Example(text="x", label=99)], client.test)
    fresh = fx.Personalizer.from_pretrained(MINILM, 8, 1)
    with pytest.raises(fx.FedError.Data):
        fresh.personalize(2, FAST, None)
    with pytest.raises(fx.FedError.Data):
        fx.emoji_benchmark_client("no-such-client")


def test_a_method_is_picked_by_name(personalizer):
    """One list of names for every front end: BT-LoRA learns λ on the examples first, AdaLoRA
    reallocates its ranks; a name the library does not know, or FedP²EFT without a PSG, is an
    InvalidOption error naming the choices."""
    for name in ("lora", "bt-lora", "adalora"):
        opts = fx.PersonalizeOptions(epochs=1, batch_size=16, learning_rate=1e-3, out_dir=None,
                                     method=name)
        report = personalizer.personalize(2, opts, None)
        assert 0.0 <= report.accuracy_after <= 1.0, name
        assert report.total_rank >= 1, name
    with pytest.raises(fx.FedError.InvalidOption) as e:
        personalizer.personalize(2, fx.PersonalizeOptions(method="lora2"), None)
    assert "adalora" in e.value.detail
    with pytest.raises(fx.FedError.InvalidOption) as e:
        personalizer.personalize(2, fx.PersonalizeOptions(method="fedp2eft"), None)
    assert "needs a PSG" in e.value.detail
