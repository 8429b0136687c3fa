/* small_objects: many small short-lived objects in one thread, like a compiler or interpreter.
 * Each iteration builds a random binary tree (an "AST") of 16-256 B nodes and a linked list of
 * 16-256 B "tokens", walks both, then tears them down (the list in allocation order, the tree in
 * post-order), with a few nodes kept alive across iterations ("interned" objects).
 *
 * Usage: small_objects [iterations=600] [nodes_per_tree=20000]
 * Output: workload=small_objects ops=<mallocs> checksum=<hex> */
#include "common.h"

typedef struct node {
    struct node *left, *right;
    uint32_t size;
    uint32_t value;
    unsigned char payload[];
} node;

static uint64_t ops;

static node *new_node(rng_t *r) {
    uint32_t size = (uint32_t)rng_range(r, 16, 256);
    if (size < sizeof(node))
        size = sizeof(node);
    node *n = xmalloc(size);
    ops++;
    n->left = n->right = NULL;
    n->size = size;
    n->value = (uint32_t)rng_next(r);
    size_t pl = size - sizeof(node);
    if (pl)
        memset(n->payload, (int)(n->value & 0xff), pl);
    return n;
}

/* Random insertion by value: a BST of depth O(log n) on average. */
static node *build_tree(rng_t *r, long count) {
    node *root = NULL;
    for (long i = 0; i < count; i++) {
        node *n = new_node(r);
        node **slot = &root;
        while (*slot)
            slot = n->value < (*slot)->value ? &(*slot)->left : &(*slot)->right;
        *slot = n;
    }
    return root;
}

static uint64_t walk_and_free(node *n, uint64_t depth) {
    if (!n)
        return 0;
    uint64_t h = walk_and_free(n->left, depth + 1);
    h += walk_and_free(n->right, depth + 1);
    size_t pl = n->size - sizeof(node);
    h += hash64(n->value ^ (depth << 32)) + (pl ? n->payload[pl - 1] : 0);
    free(n);
    return h;
}

int main(int argc, char **argv) {
    long iters = arg_long(argc, argv, 1, 600);
    long count = arg_long(argc, argv, 2, 20000);
    rng_t r;
    rng_seed(&r, 1);
    enum { KEEP = 256 };
    node *kept[KEEP] = {0};
    uint64_t sum = 0;
    for (long it = 0; it < iters; it++) {
        /* Tokens: a singly linked list built front to back, then freed in the same order. */
        node *head = NULL, **tail = &head;
        for (long i = 0; i < count / 2; i++) {
            node *n = new_node(&r);
            *tail = n;
            tail = &n->left;
        }
        node *tree = build_tree(&r, count);
        uint64_t h = 0;
        for (node *n = head; n;) {
            node *next = n->left;
            h = mix(h, n->value);
            free(n);
            n = next;
        }
        h = mix(h, walk_and_free(tree, 0));
        /* A few long-lived objects, replaced now and then. */
        for (int k = 0; k < 8; k++) {
            size_t slot = rng_next(&r) % KEEP;
            if (kept[slot])
                h = mix(h, kept[slot]->value), free(kept[slot]);
            kept[slot] = new_node(&r);
        }
        sum = mix(sum, h);
    }
    for (int k = 0; k < KEEP; k++)
        if (kept[k])
            sum = mix(sum, kept[k]->value), free(kept[k]);
    printf("workload=small_objects ops=%llu checksum=%016llx\n", (unsigned long long)ops,
           (unsigned long long)sum);
    return 0;
}
