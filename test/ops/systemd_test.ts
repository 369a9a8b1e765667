// The pure parts of the systemd integration: socket addresses from getsockname, LISTEN_FDS/LISTEN_PID, sd_notify
// messages, and pid files (claim, write, remove against real files and real processes).

import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidArgumentError } from "../../src/errors.ts";
import { PidFile, parsePidFileText, processAlive } from "../../src/ops/pid_file.ts";
import { decodeSocketAddress } from "../../src/ops/socket_address.ts";
import { LISTEN_FDS_MAX, ServiceNotifier, inheritedListeners, notifyMessage, parseListenFds } from "../../src/ops/systemd.ts";

const dir = mkdtempSync(join(tmpdir(), "lsvd-systemd-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function sockaddr(family: number, fill: (view: DataView, bytes: Uint8Array) => void, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, family, true);
  fill(view, bytes);
  return bytes;
}

describe("decodeSocketAddress", () => {
  test("unix path, abstract name, IPv4, IPv6", () => {
    const path = new TextEncoder().encode("/run/lsvd/vol.sock\0");
    expect(decodeSocketAddress(sockaddr(1, (_, b) => b.set(path, 2), 2 + path.length))).toEqual({ kind: "unix", path: "/run/lsvd/vol.sock" });
    const abstract = new TextEncoder().encode("\0lsvd-notify");
    expect(decodeSocketAddress(sockaddr(1, (_, b) => b.set(abstract, 2), 2 + abstract.length))).toEqual({ kind: "unix", path: "@lsvd-notify" });
    const v4 = sockaddr(2, (view, b) => (view.setUint16(2, 10809, false), b.set([127, 0, 0, 1], 4)), 16);
    expect(decodeSocketAddress(v4)).toEqual({ kind: "tcp", host: "127.0.0.1", port: 10809 });
    const v6 = sockaddr(10, (view, b) => (view.setUint16(2, 443, false), (b[23] = 1)), 28);
    expect(decodeSocketAddress(v6)).toEqual({ kind: "tcp", host: "::1", port: 443 });
    const v6full = sockaddr(10, (view, b) => (view.setUint16(2, 1, false), b.set([0x20, 0x01, 0x0d, 0xb8], 8), (b[23] = 0x10)), 28);
    expect(decodeSocketAddress(v6full)).toEqual({ kind: "tcp", host: "2001:db8::10", port: 1 });
  });

  test("other families, short addresses and unnamed sockets are refused", () => {
    expect(() => decodeSocketAddress(sockaddr(16, () => {}, 12))).toThrow(/family 16/);
    expect(() => decodeSocketAddress(sockaddr(2, () => {}, 6))).toThrow(InvalidArgumentError);
    expect(() => decodeSocketAddress(sockaddr(10, () => {}, 16))).toThrow(InvalidArgumentError);
    expect(() => decodeSocketAddress(sockaddr(1, () => {}, 2))).toThrow(/unnamed/);
    expect(() => decodeSocketAddress(new Uint8Array(1))).toThrow(/too short/);
  });
});

describe("parseListenFds", () => {
  test("descriptors 3.. for this pid; none when unset or meant for another process", () => {
    expect(parseListenFds({ LISTEN_FDS: "2", LISTEN_PID: "42" }, 42)).toEqual([3, 4]);
    expect(parseListenFds({ LISTEN_FDS: "0", LISTEN_PID: "42" }, 42)).toEqual([]);
    expect(parseListenFds({}, 42)).toEqual([]);
    expect(parseListenFds({ LISTEN_FDS: "2", LISTEN_PID: "41" }, 42)).toEqual([]);
  });

  test("malformed variables are refused", () => {
    expect(() => parseListenFds({ LISTEN_FDS: "2" }, 42)).toThrow(/LISTEN_PID/);
    expect(() => parseListenFds({ LISTEN_FDS: "two", LISTEN_PID: "42" }, 42)).toThrow(/LISTEN_FDS/);
    expect(() => parseListenFds({ LISTEN_FDS: String(LISTEN_FDS_MAX + 1), LISTEN_PID: "42" }, 42)).toThrow(/at most/);
  });

  test("inheritedListeners unsets the variables, also when they are for another process", () => {
    const env: Record<string, string | undefined> = { LISTEN_FDS: "1", LISTEN_PID: "1", LISTEN_FDNAMES: "nbd", KEEP: "x" };
    expect(inheritedListeners(env, 2)).toEqual([]);
    expect(env).toEqual({ KEEP: "x" });
  });

  test("a passed descriptor that is not a listening socket is refused", () => {
    // Descriptor 3 of the test runner is not a listening stream socket (a file, a pipe, or nothing).
    expect(() => inheritedListeners({ LISTEN_FDS: "1", LISTEN_PID: "7" }, 7)).toThrow(/descriptor 3 is not a listening stream socket/);
  });
});

test("notifyMessage: KEY=VALUE lines, newlines inside a value flattened", () => {
  expect(notifyMessage([["READY", "1"], ["STATUS", "serving\nnow"]])).toBe("READY=1\nSTATUS=serving now");
});

/** A python3 process bound to a unix datagram socket (a leading "@": abstract) that prints each datagram as JSON. */
async function receive(name: string, send: () => void): Promise<string> {
  const script = "import json,socket,sys\nn=sys.argv[1]\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind('\\0'+n[1:] if n.startswith('@') else n)\nprint('bound',flush=True)\nprint(json.dumps(s.recv(65536).decode()),flush=True)";
  const child = Bun.spawn({ cmd: ["python3", "-c", script, name], stdout: "pipe", stderr: "inherit", timeout: 20_000, killSignal: "SIGKILL" });
  const reader = child.stdout.getReader();
  let text = "";
  while (!text.includes("bound\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`receiver exited: ${text}`);
    text += new TextDecoder().decode(value);
  }
  send();
  while (text.split("\n").length < 3) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  child.kill("SIGKILL");
  return JSON.parse(text.split("\n")[1]!) as string;
}

describe("ServiceNotifier", () => {
  test("sends one datagram to a socket path and to an abstract name", async () => {
    const path = join(dir, "notify.sock");
    expect(await receive(path, () => new ServiceNotifier(path, () => {}).ready("serving x"))).toBe("READY=1\nSTATUS=serving x");
    const abstract = `@lsvd-test-notify-${process.pid}`;
    expect(await receive(abstract, () => new ServiceNotifier(abstract, () => {}).stopping("bye"))).toBe("STOPPING=1\nSTATUS=bye");
  }, 60_000);

  test("without NOTIFY_SOCKET nothing is sent; a failed send is logged once and does not throw", () => {
    expect(ServiceNotifier.fromEnvironment(() => {}, {}).socketPath).toBeNull();
    const lines: string[] = [];
    const notifier = new ServiceNotifier(join(dir, "nobody-listens.sock"), (line) => lines.push(line));
    notifier.status("a");
    notifier.status("b");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^warning: cannot notify the service manager at NOTIFY_SOCKET=.*ENOENT/);
  });
});

describe("PidFile", () => {
  test("parsePidFileText", () => {
    expect(parsePidFileText("123\n")).toBe(123);
    expect(parsePidFileText("123")).toBe(123);
    for (const text of ["", "0\n", "12 3", "-5", "abc", "123\n\n"]) expect(parsePidFileText(text)).toBeNull();
  });

  test("written atomically, removed only while it names us", () => {
    const path = join(dir, "a.pid");
    const pidFile = PidFile.claim(path, process.pid);
    expect(existsSync(path)).toBe(false);
    pidFile.write();
    expect(readFileSync(path, "utf8")).toBe(`${process.pid}\n`);
    pidFile.remove();
    expect(existsSync(path)).toBe(false);
    // Rewritten by someone else meanwhile: left alone.
    const again = PidFile.claim(path, process.pid);
    again.write();
    writeFileSync(path, "1\n");
    again.remove();
    expect(readFileSync(path, "utf8")).toBe("1\n");
  });

  test("a live holder and a file without a pid are refused; a dead holder's file is replaced", async () => {
    const path = join(dir, "b.pid");
    writeFileSync(path, `${process.pid}\n`);
    expect(() => PidFile.claim(path, process.pid + 1)).toThrow(/running; not replacing it/);
    writeFileSync(path, "hello\n");
    expect(() => PidFile.claim(path)).toThrow(/does not hold a process id/);
    const dead = Bun.spawn(["true"]);
    await dead.exited;
    expect(processAlive(dead.pid)).toBe(false);
    writeFileSync(path, `${dead.pid}\n`);
    PidFile.claim(path).write();
    expect(readFileSync(path, "utf8")).toBe(`${process.pid}\n`);
  });
});
