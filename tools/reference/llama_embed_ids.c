// llama.cpp's embedding of token-id sequences, for checking decoder.py on inputs no text produces
// (llama-embedding only takes text).
//
//   llama_embed_ids MODEL.gguf IDS.txt OUT.txt [CTX] [FLASH_ATTN: auto|on|off]
//
// IDS.txt holds one sequence per line, ids separated by spaces, used as given (no BOS/EOS added).
// OUT.txt gets one line per sequence: the pooled embedding as llama.cpp returns it (the file's
// pooling_type, dense layers applied, not normalized), "%.9g" floats separated by spaces.
// One thread, weights not repacked; each sequence is decoded alone in a cleared context of CTX
// (default 512) tokens.
//
// Build against the llama.cpp tree (never commit the binary):
//   cc -O2 -o llama_embed_ids llama_embed_ids.c -I$LLAMA/include -I$LLAMA/ggml/include
//      -L$LLAMA/build/bin -lllama -Wl,-rpath,$LLAMA/build/bin   (one line)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

enum { MAX_IDS = 1 << 16 };

static int parse_ids(char *line, llama_token *ids) {
    int n = 0;
    for (char *tok = strtok(line, " \t\r\n"); tok != NULL; tok = strtok(NULL, " \t\r\n")) {
        if (n == MAX_IDS) {
            return -1;
        }
        ids[n++] = (llama_token)strtol(tok, NULL, 10);
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.gguf IDS.txt OUT.txt [CTX] [auto|on|off]\n", argv[0]);
        return 2;
    }
    const int n_ctx = argc > 4 ? atoi(argv[4]) : 512;
    enum llama_flash_attn_type fa = LLAMA_FLASH_ATTN_TYPE_AUTO;
    if (argc > 5) {
        fa = strcmp(argv[5], "on") == 0 ? LLAMA_FLASH_ATTN_TYPE_ENABLED
           : strcmp(argv[5], "off") == 0 ? LLAMA_FLASH_ATTN_TYPE_DISABLED : LLAMA_FLASH_ATTN_TYPE_AUTO;
    }

    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.use_extra_bufts = false;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (model == NULL) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)n_ctx;
    cp.n_ubatch = (uint32_t)n_ctx;
    cp.n_seq_max = 1;
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
    cp.embeddings = true;
    cp.flash_attn_type = fa;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (ctx == NULL) {
        fprintf(stderr, "cannot create a context\n");
        return 1;
    }
    const int n_out = llama_model_n_embd_out(model);

    FILE *in = fopen(argv[2], "r");
    FILE *out = fopen(argv[3], "w");
    if (in == NULL || out == NULL) {
        fprintf(stderr, "cannot open %s or %s\n", argv[2], argv[3]);
        return 1;
    }
    static char line[MAX_IDS * 8];
    static llama_token ids[MAX_IDS];
    int rc = 0;
    while (fgets(line, sizeof line, in) != NULL) {
        const int n = parse_ids(line, ids);
        if (n <= 0 || n > n_ctx) {
            fprintf(stderr, "a line holds %d ids (1..%d allowed)\n", n, n_ctx);
            rc = 1;
            break;
        }
        struct llama_batch batch = llama_batch_init(n, 0, 1);
        for (int i = 0; i < n; i++) {
            batch.token[i] = ids[i];
            batch.pos[i] = i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = 1;
        }
        batch.n_tokens = n;
        llama_memory_clear(llama_get_memory(ctx), true);
        const int err = llama_decode(ctx, batch);
        const float *e = err == 0 ? llama_get_embeddings_seq(ctx, 0) : NULL;
        llama_batch_free(batch);
        if (e == NULL) {
            fprintf(stderr, "llama_decode failed (%d) or gave no pooled embedding\n", err);
            rc = 1;
            break;
        }
        for (int i = 0; i < n_out; i++) {
            fprintf(out, i + 1 < n_out ? "%.9g " : "%.9g\n", e[i]);
        }
    }
    fclose(in);
    fclose(out);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return rc;
}
