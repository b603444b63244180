/* test_text.c — the tokenizer (every rule of text.h on one sentence each), UTF-8 repair, and
 * the vocabulary: counts and min-count on the train split only, specials, order, <unk>,
 * encode (padding, truncation keeping <end>), decode, save/load and the string form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "data.h"
#include "text.h"
#include "test_util.h"
#include "vocab.h"

static char err[1024];

typedef struct Joined {
    char s[512];
} Joined;

static int join_token(const char *tok, size_t len, void *ctx) {
    Joined *j = ctx;
    if (*j->s) strcat(j->s, "|");
    strncat(j->s, tok, len);
    return 0;
}

static const char *tokens(const char *text) {
    static Joined j;
    j.s[0] = 0;
    text_tokenize(text, join_token, &j);
    return j.s;
}

static void test_tokenizer(void **state) {
    (void)state;
    assert_string_equal(tokens("A man's T-shirt, (red)."), "a|man's|t-shirt|,|(|red|)|.");
    assert_string_equal(tokens("  Two\tdogs\r\n"), "two|dogs");
    assert_string_equal(tokens("rock'n'roll -- 'quoted'"), "rock'n'roll|-|-|'|quoted|'");
    assert_string_equal(tokens("3D 2x4 CAFÉ"), "3d|2x4|caf\xC3\x89"); /* non-ASCII kept as is */
    assert_string_equal(tokens("end-"), "end|-");
    assert_string_equal(tokens(""), "");
    assert_int_equal(text_count_tokens("   \t "), 0);
    assert_int_equal(text_count_tokens("a b, c"), 4);
}

static void test_utf8_repair(void **state) {
    (void)state;
    int bad;
    char *s = text_utf8_repair("ok \xC3\xA9 \xFF \xC0\xAF \xED\xA0\x80 \xE2\x82", 17, &bad);
    /* é kept; 0xFF, overlong C0 AF (2 bytes), surrogate ED A0 80 (3), cut E2 82 (2) replaced */
    assert_string_equal(s, "ok \xC3\xA9 \xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD "
                           "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD");
    assert_int_equal(bad, 8);
    free(s);
    s = text_utf8_repair("\xF0\x9F\x98\x80", 4, &bad); /* an emoji is fine */
    assert_int_equal(bad, 0);
    free(s);
}

static Dataset *load(const char *name) {
    Dataset *ds = NULL;
    char spec[4200];
    snprintf(spec, sizeof spec, "karpathy:%s", fixture(name));
    if (data_load(spec, &ds, err, sizeof err)) fail_msg("%s", err);
    return ds;
}

static void test_vocab_build(void **state) {
    (void)state;
    /* karpathy.json train split (a.jpg, b.jpg): "A cat." "a small cat" "A dog."; the val and
     * test captions (bird, fish) must not count. */
    Dataset *ds = load("karpathy.json");
    Vocab *v = NULL;
    assert_int_equal(vocab_build(ds, 1, &v, err, sizeof err), CAP_OK);
    const char *want[] = {"<pad>", "<start>", "<end>", "<unk>", "a", ".", "cat", "dog", "small"};
    assert_int_equal(v->size, 9);
    for (int i = 0; i < 9; i++) assert_string_equal(v->tokens[i], want[i]);
    assert_int_equal(v->counts[4], 3); /* a */
    assert_int_equal(v->counts[5], 2); /* . */
    assert_int_equal(v->counts[6], 2); /* cat */
    assert_int_equal(vocab_id(v, "bird", 4), VOCAB_UNK);
    vocab_free(v);
    assert_int_equal(vocab_build(ds, 2, &v, err, sizeof err), CAP_OK);
    assert_int_equal(v->size, 7); /* a . cat */
    assert_int_equal(vocab_id(v, "dog", 3), VOCAB_UNK);
    vocab_free(v);
    assert_int_equal(vocab_build(ds, 0, &v, err, sizeof err), CAP_E_ARG);
    data_free(ds);
}

static Vocab *small_vocab(void) {
    Vocab *v = NULL;
    if (vocab_from_string("<pad>\n<start>\n<end>\n<unk>\na\nred\ncircle\n.\n,\n", "test", &v, err,
                          sizeof err))
        fail_msg("%s", err);
    return v;
}

static void test_encode_decode(void **state) {
    (void)state;
    Vocab *v = small_vocab();
    int32_t ids[8];
    assert_int_equal(vocab_encode(v, "A red circle.", ids, 8), 6);
    int32_t want[8] = {1, 4, 5, 6, 7, 2, 0, 0};
    assert_memory_equal(ids, want, sizeof want);
    assert_int_equal(vocab_encode(v, "a blue circle", ids, 8), 5);
    assert_int_equal(ids[2], VOCAB_UNK);
    /* truncation: <start> + 3 words + <end> in 5 */
    int32_t t[5];
    assert_int_equal(vocab_encode(v, "a red circle , a red circle", t, 5), 5);
    int32_t want_t[5] = {1, 4, 5, 6, 2};
    assert_memory_equal(t, want_t, sizeof want_t);
    char buf[64];
    int32_t seq[] = {1, 4, 5, 6, 8, 4, 3, 7, 2, 6, 6};
    size_t n = vocab_decode(v, seq, 11, buf, sizeof buf);
    assert_string_equal(buf, "a red circle, a <unk>.");
    assert_int_equal(n, strlen(buf));
    char tiny[5];
    assert_int_equal(vocab_decode(v, seq, 11, tiny, sizeof tiny), n); /* like snprintf */
    assert_string_equal(tiny, "a re");
    vocab_free(v);
}

static void test_save_load(void **state) {
    (void)state;
    Vocab *v = small_vocab();
    char *dir = make_temp_dir();
    char path[4200];
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    assert_int_equal(vocab_save(v, path, err, sizeof err), CAP_OK);
    Vocab *w = NULL;
    assert_int_equal(vocab_load(path, &w, err, sizeof err), CAP_OK);
    char *a = vocab_to_string(v), *b = vocab_to_string(w);
    assert_string_equal(a, b);
    assert_string_equal(a, "<pad>\n<start>\n<end>\n<unk>\na\nred\ncircle\n.\n,\n");
    assert_int_equal(vocab_id(w, "circle", 6), 6);
    free(a);
    free(b);
    vocab_free(w);
    vocab_free(v);
    write_text(path, "<pad>\n<start>\n<end>\n<unk>\nx\nx\n");
    assert_int_equal(vocab_load(path, &w, err, sizeof err), CAP_E_FORMAT);
    assert_non_null(strstr(err, "vocab.txt:6: duplicate token 'x'"));
    write_text(path, "<pad>\n<end>\n");
    assert_int_equal(vocab_load(path, &w, err, sizeof err), CAP_E_FORMAT);
    assert_non_null(strstr(err, "vocab.txt:2: expected '<start>'"));
    write_text(path, "<pad>\n<start>\n<end>\n<unk>\ntwo words\n");
    assert_int_equal(vocab_load(path, &w, err, sizeof err), CAP_E_FORMAT);
    assert_non_null(strstr(err, ":5: whitespace"));
    assert_null(w);
    /* the same text arrives from a checkpoint's metadata */
    assert_int_equal(vocab_from_string("<pad>\n<start>\n<end>\n<unk>\nna\xC3\xAFve\n\xED\xA0\x80\n",
                                       "ck.st", &w, err, sizeof err), CAP_E_FORMAT);
    assert_non_null(strstr(err, "ck.st:6: invalid UTF-8: byte 0xED at column 1 (byte offset 33)"));
    rm_tree(dir);
}

/* A vocabulary must be UTF-8: its tokens go into the checkpoint's JSON header, which a JSON
 * reader (Python's json) refuses otherwise. The error names the file, line and byte. */
static void test_vocab_bad_utf8(void **state) {
    (void)state;
    Vocab *v = NULL;
    assert_int_equal(vocab_load(fixture("vocab_bad_utf8.txt"), &v, err, sizeof err), CAP_E_FORMAT);
    assert_null(v);
    if (!strstr(err, "vocab_bad_utf8.txt:6: invalid UTF-8: byte 0xEF at column 3 (byte offset 32)"))
        fail_msg("unexpected message: %s", err);
    assert_int_equal(vocab_from_string("<pad>\n<start>\n<end>\n<unk>\nna\xC3\xAFve\n", "ok", &v,
                                       err, sizeof err), CAP_OK); /* real UTF-8 is fine */
    assert_int_equal(vocab_id(v, "na\xC3\xAFve", 6), 4);
    vocab_free(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer),     cmocka_unit_test(test_utf8_repair),
        cmocka_unit_test(test_vocab_build),   cmocka_unit_test(test_encode_decode),
        cmocka_unit_test(test_save_load),     cmocka_unit_test(test_vocab_bad_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
