// fio's nbd engine against the real `lsvd serve`, over a unix socket and TCP: two jobs (two NBD connections at once)
// do random 4 KiB writes with crc32c verify headers over disjoint 32 MiB areas, verifying as they go; the server is
// stopped cleanly and restarted, and a --verify_only pass (same jobs, same random sequence) must find every block.
// A block overwritten behind fio's back must then make --verify_only fail (the check can fail).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { LsvdServer, TRANSPORTS, cleanupAll, createVolume, ensureBuilt, run, runOk, type RunResult } from "./_harness.ts";

const MIB = 1024 * 1024;
const JOB_BYTES = 32 * MIB;
const JOBS = 2;
const TEST_TIMEOUT_MS = 120_000;
const FIO_TIMEOUT_MS = 90_000;

interface FioJob {
  jobname: string;
  error: number;
  write: { io_bytes: number };
  read: { io_bytes: number };
}

function fioArgs(uri: string, extra: string[]): string[] {
  return [
    "fio",
    "--name=lsvd",
    "--ioengine=nbd",
    `--uri=${uri}`,
    "--rw=randwrite",
    "--bs=4k",
    `--size=${JOB_BYTES}`,
    `--offset_increment=${JOB_BYTES}`,
    `--numjobs=${JOBS}`,
    "--iodepth=16",
    "--verify=crc32c",
    "--verify_fatal=1",
    "--randrepeat=1",
    "--randseed=1234",
    "--group_reporting=0",
    "--output-format=json",
    ...extra,
  ];
}

/** fio prints "fio: connected to NBD server" on stdout around the JSON (docs/platform.md, "NBD clients"): keep the JSON only. */
function parseFioJson(result: RunResult): FioJob[] {
  const json = result.stdout
    .split("\n")
    .filter((line) => !line.startsWith("fio: connected to NBD server"))
    .join("\n");
  const start = json.indexOf("{");
  if (start < 0) throw new Error(`fio printed no JSON (exit ${result.exitCode}):\n${result.stdout}\n${result.stderr}`);
  return (JSON.parse(json.slice(start)) as { jobs: FioJob[] }).jobs;
}

beforeAll(async () => {
  await ensureBuilt();
});

afterAll(cleanupAll);

for (const transport of TRANSPORTS) {
  describe(`fio over ${transport}`, () => {
    test(
      "two connections of random writes with verify, restart, verify-only pass",
      async () => {
        const paths = await createVolume(`fio-${transport}`, { size: "128m", cacheSize: "128m" });
        let server = await LsvdServer.start({ ...paths, transport, dir: paths.dir });

        const written = await run(fioArgs(server.uri, []), { cwd: paths.dir, timeoutMs: FIO_TIMEOUT_MS });
        if (written.exitCode !== 0) throw new Error(`fio write+verify failed:\n${written.stdout}\n${written.stderr}`);
        const writeJobs = parseFioJson(written);
        expect(writeJobs).toHaveLength(JOBS);
        for (const job of writeJobs) {
          expect(job.error).toBe(0);
          expect(job.write.io_bytes).toBe(JOB_BYTES);
          // do_verify reads every written block back in the same run.
          expect(job.read.io_bytes).toBe(JOB_BYTES);
        }
        expect(server.log).not.toMatch(/error/i);

        const stopped = await server.stop();
        expect(stopped.exitCode).toBe(0);
        server = await LsvdServer.start({ ...paths, transport, dir: paths.dir });

        const verified = await run(fioArgs(server.uri, ["--verify_only"]), { cwd: paths.dir, timeoutMs: FIO_TIMEOUT_MS });
        if (verified.exitCode !== 0) throw new Error(`fio --verify_only failed after restart:\n${verified.stdout}\n${verified.stderr}`);
        for (const job of parseFioJson(verified)) {
          expect(job.error).toBe(0);
          // fio accounts the skipped writes as written too; that nothing was rewritten shows below, where a block
          // changed behind fio's back is caught.
          expect(job.read.io_bytes).toBe(JOB_BYTES);
        }

        // Overwrite one block in the second job's area: the verify-only pass must now fail.
        await runOk(["qemu-io", "-f", "raw", "-c", `write -P 0x5a ${JOB_BYTES + 20 * 4096} 4096`, server.uri]);
        const broken = await run(fioArgs(server.uri, ["--verify_only"]), { cwd: paths.dir, timeoutMs: FIO_TIMEOUT_MS });
        expect(broken.exitCode).not.toBe(0);
        expect(`${broken.stdout}${broken.stderr}`).toMatch(/verify|bad magic|crc/i);

        expect((await server.stop()).exitCode).toBe(0);
      },
      TEST_TIMEOUT_MS,
    );
  });
}
