//! Intrusive doubly linked lists: the one list implementation behind every list of the
//! allocator — a bin's partly free slabs, a page heap's free runs by size and its dirty and
//! muzzy runs by age, the thread-cache registry and its pool.
//!
//! The nodes live elsewhere (span descriptors in chunk headers, caches in the metadata pool) and
//! keep their own links, a [`Links`] field; an [`Adapter`] names the field, so one node can sit
//! in two lists at once through two fields (a free run is in its size bucket and in the dirty
//! list). A list is a head and a tail, all zero when empty, so lists built in a `static` cost
//! nothing in the file (the arena table stays in `.bss`). Nothing here allocates or locks: the
//! owner of a list guards it.
//!
//! Invariant (of a [`List`] and the nodes linked through its adapter's field): following `next`
//! from `head` visits every node of the list once and ends at `tail`, whose `next` is null;
//! `prev` mirrors `next`; `head` and `tail` are both null or both not; a node in no list through
//! this field has null links.

use core::marker::PhantomData;
use core::ptr;

/// A node's links for one list.
#[repr(C)]
pub struct Links<T> {
    next: *mut T,
    prev: *mut T,
}

impl<T> Links<T> {
    /// Links of a node in no list.
    pub const fn new() -> Self {
        Links {
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
        }
    }
}

impl<T> Default for Links<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Which field of a node a list links through.
///
/// # Safety
/// [`Adapter::links`] must return the address of a [`Links`] field inside the node it is given,
/// the same field for every call, and read nothing.
pub unsafe trait Adapter {
    /// The node type.
    type Node;

    /// The links of `node`.
    ///
    /// # Safety
    /// `node` must point at memory of a `Node` (its fields may be uninitialized).
    unsafe fn links(node: *mut Self::Node) -> *mut Links<Self::Node>;
}

/// A list of nodes linked through the field `A` names. See the module docs for its invariant.
pub struct List<A: Adapter> {
    head: *mut A::Node,
    tail: *mut A::Node,
    adapter: PhantomData<A>,
}

impl<A: Adapter> List<A> {
    /// An empty list.
    pub const fn new() -> Self {
        List {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            adapter: PhantomData,
        }
    }

    /// The first node (the most recently pushed), or null.
    #[inline]
    pub fn head(&self) -> *mut A::Node {
        self.head
    }

    /// The last node (the least recently pushed), or null.
    #[inline]
    pub fn tail(&self) -> *mut A::Node {
        self.tail
    }

    /// Whether the list is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// The node after `node` in its list, or null.
    ///
    /// # Safety
    /// `node` must be a node of a list linked through `A`.
    #[inline]
    pub unsafe fn next(node: *mut A::Node) -> *mut A::Node {
        // SAFETY: per the contract, `node` is a live node with initialized links.
        unsafe { (*A::links(node)).next }
    }

    /// The node before `node` in its list, or null.
    ///
    /// # Safety
    /// As for [`List::next`].
    #[cfg(test)]
    pub unsafe fn prev(node: *mut A::Node) -> *mut A::Node {
        // SAFETY: as above.
        unsafe { (*A::links(node)).prev }
    }

    /// Puts `node` first.
    ///
    /// # Safety
    /// `node` must be a live node in no list through `A` (its links may be uninitialized) that
    /// stays live while in this list.
    pub unsafe fn push_front(&mut self, node: *mut A::Node) {
        // SAFETY: per the contract and the list invariant, `node` and the head are live nodes;
        // the links are written through raw pointers, never read, so uninitialized ones are fine.
        unsafe {
            let links = A::links(node);
            ptr::addr_of_mut!((*links).prev).write(ptr::null_mut());
            ptr::addr_of_mut!((*links).next).write(self.head);
            if self.head.is_null() {
                self.tail = node;
            } else {
                (*A::links(self.head)).prev = node;
            }
        }
        self.head = node;
    }

    /// Puts `new` in the place of `old`, which leaves the list with null links: a remove and a
    /// push that keep the order, at the cost of neither.
    ///
    /// # Safety
    /// `old` must be in this list, `new` in none of this adapter's lists.
    pub unsafe fn replace(&mut self, old: *mut A::Node, new: *mut A::Node) {
        // SAFETY: per the contract `old` and its neighbours are live nodes of this list and
        // `new`'s links are free for this list to use.
        unsafe {
            let links = A::links(old);
            let (prev, next) = ((*links).prev, (*links).next);
            A::links(new).write(Links { next, prev });
            self.point_around(prev, next, new, new);
            *links = Links::new();
        }
    }

    /// Takes `node` out of the list; its links become null.
    ///
    /// # Safety
    /// `node` must be in this list.
    pub unsafe fn remove(&mut self, node: *mut A::Node) {
        // SAFETY: per the contract and the list invariant, `node` and its neighbours are live
        // nodes of this list.
        unsafe {
            let links = A::links(node);
            let (prev, next) = ((*links).prev, (*links).next);
            self.point_around(prev, next, next, prev);
            *links = Links::new();
        }
    }

    /// Makes what followed `prev` (the head, if null) `after_prev` and what preceded `next` (the
    /// tail, if null) `before_next`: the links around a node that leaves or is replaced.
    ///
    /// # Safety
    /// `prev` and `next` must each be null or a live node of this list.
    #[inline(always)]
    unsafe fn point_around(
        &mut self,
        prev: *mut A::Node,
        next: *mut A::Node,
        after_prev: *mut A::Node,
        before_next: *mut A::Node,
    ) {
        // SAFETY: per the contract.
        unsafe {
            if prev.is_null() {
                self.head = after_prev;
            } else {
                (*A::links(prev)).next = after_prev;
            }
            if next.is_null() {
                self.tail = before_next;
            } else {
                (*A::links(next)).prev = before_next;
            }
        }
    }

    /// Takes the first node out of the list, or returns null when it is empty.
    ///
    /// # Safety
    /// The list invariant must hold (its nodes are live).
    pub unsafe fn pop_front(&mut self) -> *mut A::Node {
        let node = self.head;
        if !node.is_null() {
            // SAFETY: the head is in this list.
            unsafe { self.remove(node) };
        }
        node
    }

    /// Forgets every node without touching them (a `fork` child whose other threads are gone).
    /// Their links are stale: they may only be pushed again after [`List::push_front`]'s
    /// contract is met anew.
    pub fn forget_all(&mut self) {
        self.head = ptr::null_mut();
        self.tail = ptr::null_mut();
    }

    /// Checks the invariant; returns the number of nodes. For tests and `debug_check_invariants`.
    ///
    /// # Safety
    /// The nodes of the list must be live.
    #[cfg(test)]
    pub unsafe fn debug_check(&self) -> usize {
        assert_eq!(self.head.is_null(), self.tail.is_null(), "head and tail");
        let mut n = 0;
        let mut prev = ptr::null_mut();
        let mut node = self.head;
        while !node.is_null() {
            // SAFETY: per the contract, list members are live.
            unsafe {
                assert_eq!(Self::prev(node), prev, "prev mirrors next");
                prev = node;
                node = Self::next(node);
            }
            n += 1;
        }
        assert_eq!(prev, self.tail, "the walk ends at the tail");
        n
    }
}

impl<A: Adapter> Default for List<A> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Node {
        value: u32,
        a: Links<Node>,
        b: Links<Node>,
    }

    struct ByA;
    // SAFETY: returns the address of field `a`.
    unsafe impl Adapter for ByA {
        type Node = Node;
        unsafe fn links(node: *mut Node) -> *mut Links<Node> {
            // SAFETY: per the contract `node` points at a Node.
            unsafe { ptr::addr_of_mut!((*node).a) }
        }
    }

    struct ByB;
    // SAFETY: returns the address of field `b`.
    unsafe impl Adapter for ByB {
        type Node = Node;
        unsafe fn links(node: *mut Node) -> *mut Links<Node> {
            // SAFETY: per the contract `node` points at a Node.
            unsafe { ptr::addr_of_mut!((*node).b) }
        }
    }

    fn values<A: Adapter<Node = Node>>(list: &List<A>) -> std::vec::Vec<u32> {
        let mut out = std::vec::Vec::new();
        let mut node = list.head();
        while !node.is_null() {
            // SAFETY: the test's nodes outlive the lists.
            unsafe {
                out.push((*node).value);
                node = List::<A>::next(node);
            }
        }
        out
    }

    #[test]
    fn push_remove_pop_keep_the_invariant_in_two_lists_at_once() {
        let mut nodes: std::vec::Vec<Node> = (0..6)
            .map(|value| Node {
                value,
                a: Links::new(),
                b: Links::new(),
            })
            .collect();
        let p: std::vec::Vec<*mut Node> = nodes.iter_mut().map(|n| n as *mut Node).collect();
        let mut a = List::<ByA>::new();
        let mut b = List::<ByB>::new();
        assert!(a.is_empty() && a.tail().is_null());
        // SAFETY: the nodes live in `nodes` for the whole test; each is pushed once per list
        // and removed only while in it.
        unsafe {
            for &n in &p {
                a.push_front(n);
            }
            for &n in p.iter().step_by(2) {
                b.push_front(n);
            }
            assert_eq!(values(&a), [5, 4, 3, 2, 1, 0]);
            assert_eq!(values(&b), [4, 2, 0]);
            assert_eq!((a.debug_check(), b.debug_check()), (6, 3));
            assert_eq!((*a.tail()).value, 0);
            // Middle, head, tail.
            a.remove(p[2]);
            a.remove(p[5]);
            a.remove(p[0]);
            assert_eq!(values(&a), [4, 3, 1]);
            assert_eq!((*a.tail()).value, 1);
            assert!(List::<ByA>::next(p[2]).is_null() && List::<ByA>::prev(p[2]).is_null());
            assert_eq!(values(&b), [4, 2, 0], "the other list is untouched");
            assert_eq!(a.debug_check(), 3);
            assert_eq!((*a.pop_front()).value, 4);
            assert_eq!((*b.pop_front()).value, 4);
            b.remove(p[0]);
            assert_eq!(values(&b), [2]);
            assert_eq!(b.head(), b.tail());
            b.remove(p[2]);
            assert!(b.is_empty() && b.tail().is_null());
            assert!(b.pop_front().is_null());
            a.push_front(p[5]);
            assert_eq!(values(&a), [5, 3, 1]);
            // Replacing the middle, the head and the tail keeps the order and both ends.
            a.replace(p[3], p[0]);
            assert_eq!(values(&a), [5, 0, 1]);
            assert!(List::<ByA>::next(p[3]).is_null() && List::<ByA>::prev(p[3]).is_null());
            a.replace(p[5], p[2]);
            a.replace(p[1], p[4]);
            assert_eq!(values(&a), [2, 0, 4]);
            assert_eq!((a.head(), a.tail()), (p[2], p[4]));
            assert_eq!(a.debug_check(), 3);
            b.push_front(p[1]);
            b.replace(p[1], p[3]);
            assert_eq!((b.head(), b.tail()), (p[3], p[3]), "a list of one");
            assert_eq!(b.debug_check(), 1);
            a.forget_all();
            assert!(a.is_empty());
            assert_eq!(a.debug_check(), 0);
        }
    }
}
