#!/usr/bin/python3
# The reproducer filed with issue 12 (item 7), kept verbatim; test/e2e/serve_connections_test.ts runs it.
"""64 clients that take the NBD greeting and then say nothing hold every connection slot, with no handshake timeout:
a well-behaved client is refused for as long as they stay. Usage: /usr/bin/python3 idle_connections_lockout.py SOCKET
(a unix socket of a running `lsvd serve`). Exit 1 when the good client cannot connect within 30 s."""
import nbd, socket, sys, time
path = sys.argv[1]; idle = []
for _ in range(1000):
    s = socket.socket(socket.AF_UNIX)
    try: s.connect(path); idle.append(s)
    except OSError: break
time.sleep(1)
t0 = time.time(); ok = False
while time.time() - t0 < 30:
    try:
        h = nbd.NBD(); h.connect_unix(path); h.pread(512, 0); h.shutdown(); ok = True; break
    except nbd.Error: time.sleep(1)
print(f'{len(idle)} idle connections held; good client {"served" if ok else "refused for 30 s"}')
for s in idle: s.close()
sys.exit(0 if ok else 1)
