// Tokenizes many texts with libllama in one process (llama-tokenize loads the vocab per text).
// stdin: texts, each terminated by a NUL byte. stdout: one line of space-separated ids per text.
//   cc -O2 llama_tokenize_many.c -I$LLAMA/include -I$LLAMA/ggml/include -L$LLAMA/build/bin -lllama \
//      -Wl,-rpath,$LLAMA/build/bin -o llama_tokenize_many
//   ./llama_tokenize_many MODEL.gguf ADD_SPECIAL(0|1) PARSE_SPECIAL(0|1) < texts
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "llama.h"

int main(int argc, char ** argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s MODEL ADD_SPECIAL PARSE_SPECIAL\n", argv[0]); return 2; }
    llama_log_set(NULL, NULL);
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    struct llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    const struct llama_vocab * vocab = llama_model_get_vocab(model);
    int add = atoi(argv[2]), parse = atoi(argv[3]);
    size_t cap = 1 << 20, len = 0;
    char * buf = malloc(cap);
    int32_t * ids = malloc(sizeof(int32_t) * (1 << 20));
    int c;
    while ((c = getchar()) != EOF) {
        if (c != 0) { if (len + 1 >= cap) { cap *= 2; buf = realloc(buf, cap); } buf[len++] = (char) c; continue; }
        int n = llama_tokenize(vocab, buf, (int32_t) len, ids, 1 << 20, add, parse);
        if (n < 0) { fprintf(stderr, "tokenize failed\n"); return 1; }
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        len = 0;
    }
    llama_model_free(model);
    return 0;
}
