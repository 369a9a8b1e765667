// LogLimiter: at most N lines per window, the rest counted per kind and summed up when the window ends; nothing
// is lost from the count, and kinds are bounded.

import { expect, test } from "bun:test";
import { LogLimiter } from "../../src/nbd/log_limiter.ts";

function limiter(linesPerWindow = 3) {
  const lines: string[] = [];
  let nowMs = 1_000_000;
  const log = new LogLimiter({ log: (line) => lines.push(line), linesPerWindow, windowMs: 1000, now: () => nowMs });
  return { log, lines, advance: (ms: number) => (nowMs += ms) };
}

test("the first N lines of a window pass; the rest are summed up per kind with the last one shown", () => {
  const { log, lines, advance } = limiter(3);
  for (let index = 0; index < 10; index++) log.line("WRITE EPERM", `write ${index} failed`);
  log.line("READ EIO", "read 0 failed");
  expect(lines).toEqual(["write 0 failed", "write 1 failed", "write 2 failed"]);
  advance(1000);
  log.line("WRITE EPERM", "write 10 failed");
  expect(lines.slice(3)).toEqual([
    "nbd: suppressed 7 similar lines in the last 1000 ms; the last: write 9 failed",
    "nbd: suppressed 1 similar line in the last 1000 ms; the last: read 0 failed",
    "write 10 failed",
  ]);
  expect(log.suppressedTotal).toBe(8);
});

test("the summary comes when the window ends even if nothing else is logged", async () => {
  const lines: string[] = [];
  const log = new LogLimiter({ log: (line) => lines.push(line), linesPerWindow: 1, windowMs: 50 });
  log.line("a", "first");
  log.line("a", "second");
  log.line("a", "third");
  expect(lines).toEqual(["first"]);
  const deadline = Date.now() + 5000;
  while (lines.length < 2 && Date.now() < deadline) await Bun.sleep(10);
  expect(lines[1]).toBe("nbd: suppressed 2 similar lines in the last 50 ms; the last: third");
});

test("flush() writes pending summaries at once (a closing server), and only once", () => {
  const { log, lines } = limiter(1);
  log.line("a", "one");
  log.line("a", "two");
  log.flush();
  log.flush();
  expect(lines).toEqual(["one", "nbd: suppressed 1 similar line in the last 1000 ms; the last: two"]);
});

test("kinds are bounded: past 32, lines are pooled as other lines", () => {
  const { log, lines } = limiter(1);
  log.line("first", "let through");
  for (let index = 0; index < 100; index++) log.line(`kind ${index}`, `line ${index}`);
  log.flush();
  const summaries = lines.slice(1);
  expect(summaries.length).toBe(33);
  expect(summaries[32]).toBe("nbd: suppressed 68 other lines in the last 1000 ms; the last: line 99");
  expect(log.suppressedTotal).toBe(100);
});
