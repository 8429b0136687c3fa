# A request handler whose C extension (simulated with ctypes: Py_IncRef without the matching
# Py_DecRef) leaks a reference to every record it builds: `py_leak.py leak N` keeps N records
# alive for good (even through the interpreter's finalization), `py_leak.py fixed N` none.
import ctypes
import sys


def handle(i):
    record = {"id": i, "name": "user%d" % i, "payload": "x" * 600}
    for k in range(24):
        record["field%d" % k] = k * i
    return record


def main(mode, n):
    for i in range(n):
        record = handle(i)
        if mode == "leak":
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(record))
    print(mode, n)


main(sys.argv[1], int(sys.argv[2]))
