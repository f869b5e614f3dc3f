# cython: language_level=3, embedsignature=True, freethreading_compatible=True
# cython: boundscheck=False, wraparound=False, cdivision=True, binding=False
"""Timer queue of the failure detector, compiled (twin: :mod:`pysyncer._core._timers_py`).

:class:`TimerQueue` holds thousands of deadlines (probe timeouts, suspicion timers,
reaping, gossip ticks) keyed by hashable objects, so that one event-loop handle can
drive them all (see :mod:`pysyncer.gossip.clock`).

Order: by deadline, then by scheduling order: every :meth:`TimerQueue.schedule` call
stamps its key with the next number of a per-queue counter, and of two equal
deadlines the smaller stamp pops first. Re-scheduling a key gives it a new stamp, even
when its deadline does not change.

Layout, all C arrays but one list:

* a 4-ary min-heap of ``(deadline, stamp, slot)`` structs (24 bytes, so the four
  children of a node share one or two cache lines);
* slots: per timer, its key's hash, its heap position and its bucket in the index;
* the index, an open-addressing table of 4-byte slot numbers probed as CPython's dict
  probes (so keys with clustered hashes, such as multiples of a power of two, stay
  O(1)); a lookup compares the slot's stored hash, then identity, and only then calls
  ``__eq__``, as a dict does;
* ``_keys``, a list slot -> key: it owns the one reference the queue holds to each
  key and lets the cycle collector see them.

Why not a dict key -> slot: the dict boxes every slot number in an int object, and
popping a timer had to hash its key again to delete it. Here a pop hands the key's
reference from ``_keys`` to the returned list and marks its bucket free through the
slot, never reading the key object, and growing the index rewrites 4 bytes per timer.
With this layout, a choice among children without branches and Floyd's pop,
``pop_due`` runs 1.6x faster at 10,000 timers and 4x at 100,000 than the dict-based
queue it replaced, ``schedule``, ``reschedule`` and ``cancel`` 1.1-2.7x
(benchmarks/bench_timers.py; figures in docs/benchmarks.md).

Why any hashable key rather than int ids: the caller (the membership table) knows
members by name, so int ids would only move the name -> id map out of the queue.

Re-entry: a key's ``__hash__``/``__eq__`` that calls back into the same queue, or a
finalizer the cycle collector runs while ``schedule`` or ``pop_due`` allocates, gets
RuntimeError instead of a corrupted queue; a key the queue drops (``cancel``,
``clear``) is released once the queue is consistent again, so its ``__del__`` may use
it. A queue is not locked: use it from one thread.
"""

cimport cython
from cpython.list cimport PyList_New
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject, PyObject_Hash, PyObject_RichCompareBool, Py_EQ
from libc.stdint cimport INT32_MAX, int32_t, uint64_t

cdef extern from *:
    void _prefetch "__builtin_prefetch" (const void* address)

cdef extern from "Python.h":
    # Raw-pointer forms: each reference is moved by hand, none counted twice.
    PyObject* _get_item "PyList_GET_ITEM" (object list, Py_ssize_t i)
    void _set_item "PyList_SET_ITEM" (object list, Py_ssize_t i, PyObject* steals)
    void _incref "Py_INCREF" (PyObject* obj)
    void _decref "Py_DECREF" (PyObject* obj)
    PyObject* _none "Py_None"

from types import GenericAlias

__all__ = ["TimerQueue"]

cdef enum:
    ARITY = 4             # children per heap node
    MIN_CAPACITY = 16     # slots (and heap nodes) of a new queue's first allocation
    MIN_BUCKETS = 32      # index buckets, a power of two
    PERTURB_SHIFT = 5     # CPython's dict probe sequence
    EMPTY = -1            # an index bucket never used since the last rebuild
    DUMMY = -2            # an index bucket whose timer left (lookups probe past it)


cdef struct Node:
    double deadline
    uint64_t stamp        # scheduling order: breaks deadline ties
    Py_ssize_t slot


cdef struct Slot:
    Py_hash_t hash        # of the key, when used
    Py_ssize_t pos        # heap index when used; next free slot when free (-1 ends)
    Py_ssize_t bucket     # index bucket when used


cdef inline int _earlier(const Node* a, const Node* b) noexcept nogil:
    """1 if ``a`` pops before ``b``: computed without branches (random deadlines would
    mispredict them), so that choosing among children compiles to conditional moves."""
    return (a.deadline < b.deadline) | ((a.deadline == b.deadline) & (a.stamp < b.stamp))


@cython.final
@cython.no_gc_clear  # _keys stays a list until dealloc; cycles break through the keys
cdef class TimerQueue:
    """Deadlines keyed by hashable objects; pops due keys in (deadline, stamp) order.

    ``schedule`` (insert or re-schedule) and ``cancel`` are O(log n), ``deadline_of``,
    ``__contains__``, ``__len__`` and ``next_deadline`` O(1), ``pop_due`` O(log n) per
    key popped. Deadlines are floats (ints are converted); NaN raises ValueError.
    """

    cdef Node* _heap
    cdef Slot* _slots
    cdef int32_t* _buckets         # the index: a slot, EMPTY or DUMMY per bucket
    cdef Py_ssize_t* _popped       # scratch: the slots one pop_due call takes out
    cdef Py_ssize_t _size          # live timers (heap nodes)
    cdef Py_ssize_t _capacity      # slots and heap nodes allocated
    cdef Py_ssize_t _free          # first free slot, -1 when none below _capacity
    cdef size_t _mask              # buckets - 1
    cdef Py_ssize_t _fill          # buckets used or DUMMY
    cdef uint64_t _stamp
    cdef bint _busy                # a call is running Python code (hash, eq, collector)
    cdef list _keys                # slot -> key (None when free)

    def __cinit__(self):
        self._keys = []
        self._free = -1
        self._buckets = <int32_t*>PyMem_Malloc(MIN_BUCKETS * sizeof(int32_t))
        if self._buckets == NULL:
            raise MemoryError()
        self._mask = MIN_BUCKETS - 1
        self._empty_buckets()

    def __dealloc__(self):
        PyMem_Free(self._heap)
        PyMem_Free(self._slots)
        PyMem_Free(self._popped)
        PyMem_Free(self._buckets)

    # -- heap (C only: no Python code runs inside) --

    cdef inline void _place(self, Py_ssize_t pos, Node node) noexcept:
        self._heap[pos] = node
        self._slots[node.slot].pos = pos

    cdef void _sift_up(self, Py_ssize_t pos) noexcept:
        cdef Node node = self._heap[pos]
        cdef Py_ssize_t parent
        while pos > 0:
            parent = (pos - 1) // ARITY
            if not _earlier(&node, &self._heap[parent]):
                break
            self._place(pos, self._heap[parent])
            pos = parent
        self._place(pos, node)

    cdef inline Py_ssize_t _least_child(self, Py_ssize_t first) noexcept:
        """The earliest of the children starting at ``first`` (which exists)."""
        cdef Node* heap = self._heap
        cdef Py_ssize_t a, b, child, last
        if first + ARITY <= self._size:  # all four: a tournament the CPU runs without branches
            a = first + _earlier(&heap[first + 1], &heap[first])
            b = first + 2 + _earlier(&heap[first + 3], &heap[first + 2])
            return b if _earlier(&heap[b], &heap[a]) else a
        last = self._size
        a = first
        for child in range(first + 1, last):
            if _earlier(&heap[child], &heap[a]):
                a = child
        return a

    cdef void _sift_down(self, Py_ssize_t pos) noexcept:
        cdef Node node = self._heap[pos]
        cdef Py_ssize_t best
        while pos * ARITY + 1 < self._size:
            best = self._least_child(pos * ARITY + 1)
            if not _earlier(&self._heap[best], &node):
                break
            self._place(pos, self._heap[best])
            pos = best
        self._place(pos, node)

    cdef void _pop_root(self) noexcept:
        """Remove the root: its hole goes down to a leaf along the earliest children, then
        the last node fills it and climbs back (Floyd's way: the last node is usually a
        late deadline, so it climbs little and no comparison with it is spent going down)."""
        cdef Node node
        cdef Py_ssize_t pos = 0, child
        self._size -= 1
        if self._size == 0:
            return
        node = self._heap[self._size]
        while pos * ARITY + 1 < self._size:
            child = pos * ARITY + 1
            if child * ARITY + 1 < self._size:  # start loading every grandchild group now
                _prefetch(&self._heap[child * ARITY + 1])
                _prefetch(&self._heap[child * ARITY + 1 + ARITY])
                _prefetch(&self._heap[child * ARITY + 1 + 2 * ARITY])
                _prefetch(&self._heap[child * ARITY + 1 + 3 * ARITY])
            child = self._least_child(child)
            self._place(pos, self._heap[child])
            pos = child
        self._place(pos, node)
        self._sift_up(pos)

    cdef void _restore(self, Py_ssize_t pos) noexcept:
        """Re-establish heap order around a node whose deadline or stamp changed."""
        if pos > 0 and _earlier(&self._heap[pos], &self._heap[(pos - 1) // ARITY]):
            self._sift_up(pos)
        else:
            self._sift_down(pos)

    cdef void _unlink(self, Py_ssize_t slot) noexcept:
        """Take a timer out of the heap and the index; its slot and key stay in use."""
        cdef Py_ssize_t pos = self._slots[slot].pos
        self._buckets[self._slots[slot].bucket] = DUMMY
        if pos == 0:
            self._pop_root()
        else:
            self._size -= 1
            if pos != self._size:
                self._place(pos, self._heap[self._size])
                self._restore(pos)

    cdef inline void _release(self, Py_ssize_t slot) noexcept:
        """Put an unlinked timer's slot (its key already taken) back on the free list."""
        self._slots[slot].pos = self._free
        self._free = slot

    # -- index --

    cdef inline void _empty_buckets(self) noexcept:
        cdef size_t i
        for i in range(self._mask + 1):
            self._buckets[i] = EMPTY
        self._fill = 0

    cdef Py_ssize_t _lookup(self, object key, Py_hash_t hash, Py_ssize_t* vacant) except -2:
        """Bucket holding ``key``, or -1; ``vacant`` gets the first bucket an insertion
        may use. Calls the key's ``__eq__`` on a hash match (the caller holds _busy)."""
        cdef size_t perturb = <size_t>hash
        cdef size_t i = <size_t>hash & self._mask
        cdef int32_t slot
        cdef PyObject* stored
        cdef int equal
        vacant[0] = -1
        while True:
            slot = self._buckets[i]
            if slot == EMPTY:
                if vacant[0] < 0:
                    vacant[0] = <Py_ssize_t>i
                return -1
            if slot == DUMMY:
                if vacant[0] < 0:
                    vacant[0] = <Py_ssize_t>i
            elif self._slots[slot].hash == hash:
                stored = _get_item(self._keys, slot)
                if stored == <PyObject*>key:
                    return <Py_ssize_t>i
                equal = PyObject_RichCompareBool(<object>stored, key, Py_EQ)
                if equal < 0:
                    return -2
                if equal:
                    return <Py_ssize_t>i
            perturb >>= PERTURB_SHIFT
            i = (i * 5 + perturb + 1) & self._mask

    cdef int _rebuild_index(self, size_t buckets) except -1:
        """Re-insert every live timer into ``buckets`` buckets (dropping DUMMYs)."""
        cdef int32_t* fresh = <int32_t*>PyMem_Malloc(buckets * sizeof(int32_t))
        cdef Py_ssize_t pos
        cdef Slot* slot
        cdef size_t i, perturb
        if fresh == NULL:
            raise MemoryError()
        PyMem_Free(self._buckets)
        self._buckets = fresh
        self._mask = buckets - 1
        self._empty_buckets()
        for pos in range(self._size):
            slot = &self._slots[self._heap[pos].slot]
            perturb = <size_t>slot.hash
            i = <size_t>slot.hash & self._mask
            while fresh[i] != EMPTY:
                perturb >>= PERTURB_SHIFT
                i = (i * 5 + perturb + 1) & self._mask
            fresh[i] = <int32_t>self._heap[pos].slot
            slot.bucket = <Py_ssize_t>i
        self._fill = self._size
        return 0

    cdef int _reserve(self) except -1:
        """Make room for one more timer (heap node, slot, scratch entry, bucket)."""
        cdef Py_ssize_t capacity, i
        cdef size_t buckets
        cdef void* grown
        if (self._fill + 1) * 3 > <Py_ssize_t>(self._mask + 1) * 2:  # over 2/3 full
            buckets = MIN_BUCKETS
            while <Py_ssize_t>buckets * 2 < (self._size + 1) * 3:  # then 1/3 to 2/3 full
                buckets *= 2
            self._rebuild_index(buckets)
        if self._free >= 0:
            return 0
        capacity = max(MIN_CAPACITY, self._capacity * 2)
        if capacity > INT32_MAX:
            raise MemoryError("a TimerQueue holds at most 2**31 - 1 timers")
        grown = PyMem_Realloc(self._heap, capacity * sizeof(Node))
        if grown == NULL:
            raise MemoryError()
        self._heap = <Node*>grown
        grown = PyMem_Realloc(self._slots, capacity * sizeof(Slot))
        if grown == NULL:
            raise MemoryError()
        self._slots = <Slot*>grown
        grown = PyMem_Realloc(self._popped, capacity * sizeof(Py_ssize_t))
        if grown == NULL:
            raise MemoryError()
        self._popped = <Py_ssize_t*>grown
        self._keys.extend([None] * (capacity - self._capacity))
        for i in range(self._capacity, capacity):  # chain the new slots, lowest first
            self._slots[i].pos = i + 1 if i + 1 < capacity else -1
        self._free = self._capacity
        self._capacity = capacity
        return 0

    cdef inline int _refuse_reentry(self) except -1:
        if self._busy:
            raise RuntimeError(
                "TimerQueue re-entered from its own call (a key's __hash__ or __eq__, "
                "or a finalizer run by the collector)"
            )
        return 0

    cdef inline int _enter(self) except -1:
        self._refuse_reentry()
        self._busy = True
        return 0

    cdef inline Py_ssize_t _find(self, object key) except -2:
        """Bucket of ``key``, or -1 (hashes it: the caller holds _busy)."""
        cdef Py_ssize_t vacant
        return self._lookup(key, PyObject_Hash(key), &vacant)

    cdef inline PyObject* _take_key(self, Py_ssize_t slot) noexcept:
        """The key of a freed slot: _keys gives up its reference to the caller."""
        cdef PyObject* key = _get_item(self._keys, slot)
        _incref(_none)
        _set_item(self._keys, slot, _none)
        return key

    # -- public API --

    def schedule(self, key, double deadline):
        """Set the deadline of ``key`` (a new timer, or a re-scheduled one)."""
        cdef Py_hash_t hash
        cdef Py_ssize_t bucket, vacant, slot, pos
        if deadline != deadline:
            raise ValueError("a timer deadline cannot be NaN")
        self._enter()
        try:
            hash = PyObject_Hash(key)  # may raise (unhashable key): nothing changed yet
            self._reserve()  # room for one more, so that `vacant` stays valid
            bucket = self._lookup(key, hash, &vacant)
            self._stamp += 1
            if bucket >= 0:
                pos = self._slots[self._buckets[bucket]].pos
                self._heap[pos].deadline = deadline
                self._heap[pos].stamp = self._stamp
                self._restore(pos)
                return
            if self._buckets[vacant] == EMPTY:
                self._fill += 1
            slot = self._free
            self._free = self._slots[slot].pos
            _incref(<PyObject*>key)
            _set_item(self._keys, slot, <PyObject*>key)
            _decref(_none)  # the free slot's None, replaced
            self._buckets[vacant] = <int32_t>slot
            self._slots[slot].hash = hash
            self._slots[slot].bucket = vacant
            self._heap[self._size] = Node(deadline, self._stamp, slot)
            self._size += 1
            self._sift_up(self._size - 1)
        finally:
            self._busy = False

    def cancel(self, key):
        """Remove the timer of ``key``; True if there was one."""
        cdef Py_ssize_t bucket, slot
        cdef PyObject* dropped
        self._enter()
        try:
            bucket = self._find(key)
            if bucket < 0:
                return False
            slot = self._buckets[bucket]
            self._unlink(slot)
            dropped = self._take_key(slot)
            self._release(slot)
        finally:
            self._busy = False
        _decref(dropped)  # last, with the queue consistent: the key's __del__ may use it
        return True

    def deadline_of(self, key):
        """Deadline of ``key``, or None when it has no timer."""
        cdef Py_ssize_t bucket
        self._enter()
        try:
            bucket = self._find(key)
        finally:
            self._busy = False
        if bucket < 0:
            return None
        return self._heap[self._slots[self._buckets[bucket]].pos].deadline

    def pop_due(self, double now, limit=None):
        """Remove and return the keys whose deadline is <= ``now``, in order.

        At most ``limit`` keys when it is not None (a negative limit is a ValueError).
        """
        cdef Py_ssize_t count = -1 if limit is None else limit
        cdef Py_ssize_t popped = 0, slot, i
        cdef list due
        if count < -1 or (count == -1 and limit is not None):
            raise ValueError("limit must be None or >= 0")
        self._enter()
        try:
            # The due timers leave the heap and the index; their slots and keys stay
            # theirs until the list exists (creating it may run the cycle collector,
            # and any finalizer using the queue meets _busy).
            while self._size > 0 and self._heap[0].deadline <= now and popped != count:
                slot = self._heap[0].slot
                self._unlink(slot)
                self._popped[popped] = slot
                popped += 1
            due = PyList_New(popped)  # NULL items, all set below before anyone sees it
            for i in range(popped):  # hand each key's reference from _keys to the list
                slot = self._popped[i]
                _set_item(due, i, self._take_key(slot))
                self._release(slot)
        finally:
            self._busy = False
        return due

    def next_deadline(self):
        """Earliest deadline, or None when the queue is empty."""
        return self._heap[0].deadline if self._size > 0 else None

    def clear(self):
        """Remove every timer."""
        cdef Py_ssize_t i
        cdef list fresh, dropped
        self._refuse_reentry()
        fresh = [None] * self._capacity
        while len(fresh) != self._capacity:  # the collector ran and some code grew us
            fresh = [None] * self._capacity
        for i in range(self._capacity):  # from here on no Python code runs
            self._slots[i].pos = i + 1 if i + 1 < self._capacity else -1
        self._free = 0 if self._capacity > 0 else -1
        self._size = 0
        self._empty_buckets()
        dropped = self._keys
        self._keys = fresh
        del dropped  # last, with the queue consistent: the keys' __del__ may use it

    def __len__(self):
        return self._size

    def __contains__(self, key):
        cdef Py_ssize_t bucket
        self._enter()
        try:
            bucket = self._find(key)
        finally:
            self._busy = False
        return bucket >= 0

    def __repr__(self):
        return f"<TimerQueue of {self._size} timers>"

    __class_getitem__ = classmethod(GenericAlias)  # TimerQueue[str], as the twin's
