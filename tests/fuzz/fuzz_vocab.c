/* fuzz_vocab.c — the vocabulary reader (runtime/data/vocab.c, vocab_from_string: what
 * vocab_load runs on a file's text and what a checkpoint's vocabulary goes through). An
 * accepted vocabulary must survive its own round trip (vocab_to_string, then read again
 * with the same size and tokens), and encoding/decoding with it must stay in bounds: the
 * input text itself is encoded as a caption (the tokenizer, runtime/data/text.c) and decoded. */
#include "fuzz_util.h"

#include "vocab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_cstring(data, size);
    Vocab *v = NULL;
    char err[1024] = "";
    CapStatus st = vocab_from_string(text, "fuzz.txt", &v, err, sizeof err);
    if (st != CAP_OK) {
        FUZZ_CHECK(err[0] != 0, "vocab_from_string failed without a message");
        free(text);
        return 0;
    }
    FUZZ_CHECK(v->size >= VOCAB_N_SPECIAL, "vocabulary of %d tokens", (int)v->size);
    char *again = vocab_to_string(v);
    FUZZ_CHECK(again != NULL, "vocab_to_string returned NULL");
    Vocab *v2 = NULL;
    st = vocab_from_string(again, "again.txt", &v2, err, sizeof err);
    FUZZ_CHECK(st == CAP_OK, "written vocabulary does not read back: %s", err);
    FUZZ_CHECK(v2->size == v->size, "size %d read back as %d", (int)v->size, (int)v2->size);
    for (int32_t i = 0; i < v->size; i++) {
        FUZZ_CHECK(strcmp(v->tokens[i], v2->tokens[i]) == 0, "token %d differs", (int)i);
        FUZZ_CHECK(vocab_id(v, v->tokens[i], strlen(v->tokens[i])) == i, "id of token %d",
                   (int)i);
    }
    enum { MAX_LEN = 24 };
    int32_t ids[MAX_LEN];
    int n = vocab_encode(v, text, ids, MAX_LEN);
    FUZZ_CHECK(n >= 2 && n <= MAX_LEN, "vocab_encode gave %d", n);
    for (int i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < v->size, "id %d out of range", (int)ids[i]);
    char small[16];
    size_t need = vocab_decode(v, ids, n, small, sizeof small);
    char *big = malloc(need + 1);
    if (!big) abort();
    size_t got = vocab_decode(v, ids, n, big, need + 1);
    FUZZ_CHECK(got == need && strlen(big) == need, "vocab_decode: %zu then %zu", need, got);
    free(big);
    vocab_free(v2);
    free(again);
    vocab_free(v);
    free(text);
    return 0;
}
