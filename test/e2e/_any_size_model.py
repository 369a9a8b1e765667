# Randomized any-size I/O against a byte model, through libnbd (python3-libnbd, what nbdsh runs): several connections
# send unaligned writes, zeroings, trims and reads at once, a third of them crowded into the first 16 KiB so that ops
# in flight share sectors. Ops in flight never share a byte, so the model is the same in any order they land in;
# reads are checked against it. At the end every op is acknowledged and the model is written to MODEL_FILE (the
# caller kills the server, restarts it and compares the export with it). Prints one JSON line of counters.
# INITIAL_FILE, when given, is what the export holds at the start (an earlier run's MODEL_FILE); else it is all zero.
#
# usage: _any_size_model.py URI SEED OPS MODEL_FILE [INITIAL_FILE]

import json
import random
import sys
import threading

import nbd

URI, SEED, OPS, MODEL_FILE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
INITIAL_FILE = sys.argv[5] if len(sys.argv) > 5 else None
CONNECTIONS = 4
HOT_BYTES = 16 * 1024

first = nbd.NBD()
first.connect_uri(URI)
SIZE = first.get_size()
MINIMUM = first.get_block_size(nbd.SIZE_MINIMUM)
if MINIMUM != 1:
    sys.exit(f"the server advertises a minimum block size of {MINIMUM}, not 1")
handles = [first] + [nbd.NBD() for _ in range(CONNECTIONS - 1)]
for handle in handles[1:]:
    handle.connect_uri(URI)

model = bytearray(SIZE)
if INITIAL_FILE is not None:
    with open(INITIAL_FILE, "rb") as initial:
        model[:] = initial.read()
    if len(model) != SIZE:
        sys.exit(f"{INITIAL_FILE} holds {len(model)} bytes, the export {SIZE}")
busy = bytearray(SIZE)
lock = threading.Lock()
counts = {"write": 0, "zero": 0, "trim": 0, "read": 0, "unaligned": 0, "retries": 0}
failures = []


def pick(rng):
    """An op and a byte range no op in flight touches (marked busy), or None."""
    roll = rng.randrange(100)
    kind = "write" if roll < 60 else "zero" if roll < 72 else "trim" if roll < 80 else "read"
    shape = rng.randrange(10)
    if shape < 5:
        length = 1 + rng.randrange(64)
    elif shape < 8:
        length = 1 + rng.randrange(3 * 512)
    elif shape < 9:
        length = 512 * (1 + rng.randrange(16))
    else:
        length = 1 + rng.randrange(1024 * 1024 + 64)
    hot = length < 4096 and rng.randrange(3) == 0
    offset = rng.randrange(HOT_BYTES - length) if hot else rng.randrange(SIZE - length + 1)
    if shape == 8:
        offset -= offset % 512
    with lock:
        if any(busy[offset : offset + length]):
            counts["retries"] += 1
            return None
        busy[offset : offset + length] = b"\1" * length
        counts[kind] += 1
        if offset % 512 != 0 or length % 512 != 0:
            counts["unaligned"] += 1
        if kind == "zero" or kind == "trim":
            model[offset : offset + length] = bytes(length)
        expected = bytes(model[offset : offset + length]) if kind == "read" else None
    return kind, offset, length, expected


def send(handle, rng, kind, offset, length, expected):
    flags = nbd.CMD_FLAG_FUA if rng.randrange(10) == 0 and kind != "read" else 0
    if kind == "write":
        data = rng.randbytes(length)
        with lock:
            model[offset : offset + length] = data
        handle.pwrite(data, offset, flags)
    elif kind == "zero":
        handle.zero(length, offset, flags)
    elif kind == "trim":
        handle.trim(length, offset, flags)
    else:
        got = handle.pread(length, offset)
        if got != expected:
            at = next(index for index in range(length) if got[index] != expected[index])
            failures.append(f"read at {offset}+{length} differs from the model at byte {offset + at}")


def worker(index):
    handle = handles[index]
    rng = random.Random(SEED * 1000 + index)
    done = 0
    while done < OPS // CONNECTIONS and not failures:
        chosen = pick(rng)
        if chosen is None:
            continue
        kind, offset, length, expected = chosen
        try:
            send(handle, rng, kind, offset, length, expected)
        except nbd.Error as error:
            failures.append(f"{kind} at {offset}+{length}: {error}")
        with lock:
            busy[offset : offset + length] = bytes(length)
        done += 1


threads = [threading.Thread(target=worker, args=(index,)) for index in range(CONNECTIONS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
if failures:
    sys.exit("; ".join(failures[:5]))
# Everything was acknowledged; a whole read on one connection must equal the model before the crash too.
whole = bytearray()
for offset in range(0, SIZE, 32 * 1024 * 1024):
    whole += first.pread(min(32 * 1024 * 1024, SIZE - offset), offset)
if whole != model:
    sys.exit("the export differs from the model after all ops were acknowledged")
with open(MODEL_FILE, "wb") as out:
    out.write(model)
for handle in handles:
    handle.shutdown()
print(json.dumps(counts))
