// The C++ program of the report tests: a leak through operator new in a namespaced method.
#include <vector>

namespace store {
struct Shelf {
    std::vector<char *> items;
    __attribute__((noinline)) void stock(int n) {
        for (int i = 0; i < n; i++) {
            items.push_back(new char[4096]); // LEAK_CPP
        }
    }
};
}  // namespace store

int main() {
    auto *shelf = new store::Shelf;
    shelf->stock(1024);
    return 0;
}
