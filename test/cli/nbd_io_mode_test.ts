// `lsvd serve --nbd-io auto` (src/cli/serve_start.ts, nbdRingUnfit): when the default serves NBD on Bun's sockets
// instead of the ring, and the one reason it gives. The transports themselves are tested in test/nbd and test/e2e.

import { describe, expect, test } from "bun:test";
import { parseCommandArgs } from "../../src/cli/args.ts";
import { NBD_IO_OPTIONS, nbdRingUnfit } from "../../src/cli/serve_start.ts";
import { TLS_OPTIONS } from "../../src/cli/tls_options.ts";

const OPTIONS = { ...NBD_IO_OPTIONS, ...TLS_OPTIONS, listen: { type: "string" as const }, socket: { type: "string" as const } };
const parse = (argv: string[]) => parseCommandArgs(argv, OPTIONS);

describe("--nbd-io auto", () => {
  test("the ring on a 6.0+ kernel, over a unix socket or IP addresses (v4, v6, localhost)", () => {
    for (const argv of [[], ["--socket", "/tmp/x.sock"], ["--listen", "127.0.0.1:10809"], ["--listen", "[::1]:0"], ["--listen", "localhost:1"], ["--listen", "0.0.0.0:1"]]) {
      expect(nbdRingUnfit(parse(argv), "6.18.44-cloud-amd64")).toBeNull();
    }
    expect(nbdRingUnfit(parse([]), "6.0.0")).toBeNull();
    expect(nbdRingUnfit(parse([]), "7.1")).toBeNull();
  });

  test("Bun's sockets for TLS, a host name, or a kernel before 6.0, each with its reason", () => {
    expect(nbdRingUnfit(parse(["--tls", "on"]), "6.18.0")).toContain("--tls is on");
    expect(nbdRingUnfit(parse(["--tls", "require"]), "6.18.0")).toContain("--tls is on");
    expect(nbdRingUnfit(parse(["--listen", "storage.example:10809"]), "6.18.0")).toBe("--listen names a host (storage.example:10809), not an IP address");
    expect(nbdRingUnfit(parse([]), "5.19.17")).toBe("kernel 5.19.17 is older than 6.0");
    expect(nbdRingUnfit(parse([]), "4.19.0-27-amd64")).toBe("kernel 4.19.0-27-amd64 is older than 6.0");
    expect(nbdRingUnfit(parse([]), "unknown")).toBe("kernel unknown is older than 6.0");
  });
});
