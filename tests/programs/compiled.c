/* Program that the gcc test compiles with gcc running under Tally. It is
 * deliberately varied (structs, function pointers, recursion, a hash table,
 * qsort, string formatting, floating point) so that cc1 builds sizeable
 * internal data structures, and its output is fixed and known: the test
 * checks it against compiled.expected. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    char key[24];
    unsigned count;
    struct entry *next;
};

#define BUCKETS 257

static unsigned hash_str(const char *s)
{
    unsigned h = 2166136261u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h;
}

static struct entry *table[BUCKETS];

static void count_word(const char *word)
{
    unsigned b = hash_str(word) % BUCKETS;
    for (struct entry *e = table[b]; e; e = e->next)
        if (strcmp(e->key, word) == 0) {
            e->count++;
            return;
        }
    struct entry *e = calloc(1, sizeof *e);
    if (!e)
        abort();
    snprintf(e->key, sizeof e->key, "%s", word);
    e->count = 1;
    e->next = table[b];
    table[b] = e;
}

static int by_count_then_key(const void *a, const void *b)
{
    const struct entry *x = *(struct entry *const *)a, *y = *(struct entry *const *)b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return strcmp(x->key, y->key);
}

static unsigned sieve(unsigned limit)
{
    char *composite = calloc(limit + 1, 1);
    unsigned primes = 0;
    for (unsigned i = 2; i <= limit; i++) {
        if (composite[i])
            continue;
        primes++;
        for (unsigned long j = (unsigned long)i * i; j <= limit; j += i)
            composite[j] = 1;
    }
    free(composite);
    return primes;
}

/* Recursive-descent evaluator for + - * / ( ) over integers. */
static const char *cursor;
static long expr(void);
static long atom(void)
{
    if (*cursor == '(') {
        cursor++;
        long v = expr();
        cursor++; /* ')' */
        return v;
    }
    return strtol(cursor, (char **)&cursor, 10);
}
static long term(void)
{
    long v = atom();
    while (*cursor == '*' || *cursor == '/') {
        char op = *cursor++;
        long r = atom();
        v = op == '*' ? v * r : v / r;
    }
    return v;
}
static long expr(void)
{
    long v = term();
    while (*cursor == '+' || *cursor == '-') {
        char op = *cursor++;
        long r = term();
        v = op == '+' ? v + r : v - r;
    }
    return v;
}
static long eval(const char *text)
{
    cursor = text;
    return expr();
}

typedef double (*unary_fn)(double);
static double square(double x) { return x * x; }
static double halve(double x) { return x / 2; }
static double add_one(double x) { return x + 1; }

int main(void)
{
    static const char *syllables[] = {"ta", "ke", "ri", "mo", "su", "na", "lo", "pe"};
    uint64_t state = 0x243F6A8885A308D3ull;
    for (int i = 0; i < 20000; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        char word[24] = "";
        for (unsigned k = 0; k < 1 + (state % 3); k++)
            strcat(word, syllables[(state >> (8 + 3 * k)) & 7]);
        count_word(word);
    }
    size_t n = 0;
    for (int b = 0; b < BUCKETS; b++)
        for (struct entry *e = table[b]; e; e = e->next)
            n++;
    struct entry **all = malloc(n * sizeof *all);
    size_t k = 0;
    for (int b = 0; b < BUCKETS; b++)
        for (struct entry *e = table[b]; e; e = e->next)
            all[k++] = e;
    qsort(all, n, sizeof *all, by_count_then_key);
    printf("distinct words: %zu\n", n);
    for (size_t i = 0; i < 5; i++)
        printf("top %zu: %s %u\n", i + 1, all[i]->key, all[i]->count);
    for (size_t i = 0; i < n; i++)
        free(all[i]);
    free(all);

    printf("primes below 1000000: %u\n", sieve(1000000));
    printf("eval: %ld %ld %ld\n", eval("1+2*3"), eval("(1+2)*3-4/2"), eval("((7))*(6-(2+1))*100"));

    unary_fn chain[] = {square, halve, add_one, square};
    double x = 3;
    for (size_t i = 0; i < sizeof chain / sizeof *chain; i++)
        x = chain[i](x);
    printf("chain: %.3f\n", x);
    return 0;
}
