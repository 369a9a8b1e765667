// The logger (src/util/log.ts): a line's level from its prefix or its channel, filtering by the configured level, the
// text format (timestamp, component, the line as given) and the json format (one object per line: time, level, msg
// without the level prefix, fields); and Progress (src/cli/progress.ts) off a terminal: a line per step, per tenth of
// the work, and through the logger as json lines when the format is json.

import { afterEach, describe, expect, test } from "bun:test";
import { classifyLine, configureLogging, logEnabled, makeLogger, type LogLevel } from "../../src/util/log.ts";
import { Progress } from "../../src/cli/progress.ts";

const TIME = new Date("2026-01-02T03:04:05.678Z");

/** Configures the process's logging into an array of written chunks. */
function collect(level: LogLevel, format: "text" | "json" = "text"): string[] {
  const written: string[] = [];
  configureLogging({ level, format, write: (text) => written.push(text), now: () => TIME });
  return written;
}

/** One line at each level, on the info channel (the unprefixed one is info). */
function logOneOfEach(): void {
  const log = makeLogger("lsvd");
  log("error: the disk is on fire");
  log("warning: the disk is warm");
  log("serving on nbd+unix:///?socket=/tmp/s");
  log("debug: recovery: journal case @D");
}

afterEach(() => configureLogging({}));

describe("levels", () => {
  test("a line's level: its prefix, else its channel", () => {
    expect(classifyLine("error: x", "info")).toEqual({ level: "error", msg: "x" });
    expect(classifyLine("warning: x", "info")).toEqual({ level: "warn", msg: "x" });
    expect(classifyLine("debug: x", "warn")).toEqual({ level: "debug", msg: "x" });
    expect(classifyLine("nbd unix#1: WRITE failed", "warn")).toEqual({ level: "warn", msg: "nbd unix#1: WRITE failed" });
    expect(classifyLine("errors: not a prefix", "info")).toEqual({ level: "info", msg: "errors: not a prefix" });
  });

  const expected: Record<LogLevel, string[]> = {
    error: ["error: the disk is on fire"],
    warn: ["error: the disk is on fire", "warning: the disk is warm"],
    info: ["error: the disk is on fire", "warning: the disk is warm", "serving on nbd+unix:///?socket=/tmp/s"],
    debug: ["error: the disk is on fire", "warning: the disk is warm", "serving on nbd+unix:///?socket=/tmp/s", "debug: recovery: journal case @D"],
  };
  for (const level of ["error", "warn", "info", "debug"] as const) {
    test(`--log-level ${level} writes the lines at ${level} and above, and no other`, () => {
      const written = collect(level);
      logOneOfEach();
      expect(written).toEqual(expected[level].map((line) => `${TIME.toISOString()} lsvd: ${line}\n`));
    });
  }

  test("channels: serve's warn channel keeps unprefixed lines at warn; a quiet logger's lines are debug", () => {
    const written = collect("warn");
    makeLogger("lsvd", false, "warn")("nbd unix#1: WRITE at 0 length 512 failed: EPERM");
    makeLogger("lsvd")("serving on x");
    makeLogger("lsvd", true)("lease of disk: epoch 2, new lease");
    makeLogger("lsvd", true)("error: still said");
    expect(written.map((text) => text.slice(TIME.toISOString().length + 1))).toEqual([
      "lsvd: nbd unix#1: WRITE at 0 length 512 failed: EPERM\n",
      "lsvd: error: still said\n",
    ]);
    expect(logEnabled("warn")).toBe(true);
    expect(logEnabled("info")).toBe(false);
  });

  test("the configuration is read at each line: a logger made before configureLogging follows it", () => {
    const log = makeLogger("lsvd");
    const written = collect("error");
    log("serving on x");
    expect(written).toEqual([]);
  });
});

describe("json format", () => {
  test("one object per line: time, level, msg without the level prefix, fields with the component and the caller's", () => {
    const written = collect("debug", "json");
    logOneOfEach();
    makeLogger("lsvd")("recovery: journal records walked: 3 of 4 (75%)", { done: 3, total: 4 });
    expect(written.every((text) => text.endsWith("\n") && text.indexOf("\n") === text.length - 1)).toBe(true);
    const objects = written.map((text) => JSON.parse(text));
    expect(objects).toEqual([
      { time: TIME.toISOString(), level: "error", msg: "the disk is on fire", fields: { component: "lsvd" } },
      { time: TIME.toISOString(), level: "warn", msg: "the disk is warm", fields: { component: "lsvd" } },
      { time: TIME.toISOString(), level: "info", msg: "serving on nbd+unix:///?socket=/tmp/s", fields: { component: "lsvd" } },
      { time: TIME.toISOString(), level: "debug", msg: "recovery: journal case @D", fields: { component: "lsvd" } },
      { time: TIME.toISOString(), level: "info", msg: "recovery: journal records walked: 3 of 4 (75%)", fields: { component: "lsvd", done: 3, total: 4 } },
    ]);
  });

  test("a line with quotes, newlines and control characters is still one parseable line", () => {
    const written = collect("info", "json");
    makeLogger("lsvd")('error: bad "name"\nsecond line\u0001');
    expect(written.length).toBe(1);
    expect(written[0]!.split("\n").length).toBe(2); // the line and the empty rest after its newline
    expect(JSON.parse(written[0]!).msg).toBe('bad "name"\nsecond line\u0001');
  });
});

/** A stream that is not a terminal, collecting what is written. */
function pipe(): { stream: NodeJS.WriteStream; text: () => string } {
  let text = "";
  const stream = { isTTY: false, write: (chunk: string) => ((text += chunk), true) } as unknown as NodeJS.WriteStream;
  return { stream, text: () => text };
}

describe("Progress off a terminal", () => {
  test("a line per step and per tenth of the work, nothing rewritten in place", () => {
    collect("info");
    const out = pipe();
    const progress = new Progress("lsvd fsck", true, out.stream);
    progress.step("checking 100 object(s)");
    for (let done = 0; done <= 100; done++) progress.count(done, 100, "objects checked");
    progress.status("round 1: 2 object(s) cleaned");
    progress.clear();
    const lines = out.text().split("\n");
    expect(out.text()).not.toContain("\r");
    expect(lines[0]).toBe("lsvd fsck: checking 100 object(s)");
    expect(lines.filter((line) => line.startsWith("lsvd fsck: objects checked: ")).length).toBe(11);
    expect(lines).toContain("lsvd fsck: objects checked: 100 of 100 (100%)");
    expect(lines).toContain("lsvd fsck: round 1: 2 object(s) cleaned");
  });

  test("work of unknown size: the first count is a line, the next ones wait (no flood)", () => {
    collect("info");
    const out = pipe();
    const progress = new Progress("recovery", true, out.stream);
    for (let done = 1; done <= 1000; done++) progress.count(done, null, "objects rolled forward");
    expect(out.text()).toBe("recovery: objects rolled forward: 1\n");
  });

  test("with --log-format json, progress lines are log lines with done and total", () => {
    const written = collect("info", "json");
    const out = pipe();
    const progress = new Progress("lsvd gc", true, out.stream);
    progress.step("3 object(s) in the backend; collecting");
    progress.count(1, 2, "objects checked");
    expect(out.text()).toBe("");
    const objects = written.map((text) => JSON.parse(text));
    expect(objects.map((object) => object.msg)).toEqual(["lsvd gc: 3 object(s) in the backend; collecting", "lsvd gc: objects checked: 1 of 2 (50%)"]);
    expect(objects[1].fields).toEqual({ component: "lsvd", done: 1, total: 2 });
  });

  test("disabled: nothing at all", () => {
    collect("info");
    const out = pipe();
    const progress = new Progress("lsvd gc", false, out.stream);
    progress.step("x");
    progress.count(1, 2, "y");
    progress.status("z");
    expect(out.text()).toBe("");
  });
});

describe("a missing optional library", () => {
  test("ISA-L is named by the package that provides it (said once per process, by main.ts before the command runs)", async () => {
    const { isalMissingNote } = await import("../../src/cli/main.ts");
    const note = isalMissingNote("libisal.so.2: cannot open shared object file");
    expect(note).toStartWith("note: ISA-L not loaded (install the libisal2 package");
    expect(note).toContain("libisal.so.2: cannot open shared object file");
  });
});

describe("Progress on a terminal", () => {
  test("one line rewritten in place, ended by clear(); with json logs, lines instead", () => {
    collect("info");
    let text = "";
    const tty = { isTTY: true, write: (chunk: string) => ((text += chunk), true) } as unknown as NodeJS.WriteStream;
    const progress = new Progress("recovery", true, tty);
    progress.count(5, 5, "journal records walked");
    progress.status("round 1: 0 object(s) cleaned");
    progress.clear();
    expect(text).toBe("\r\x1b[Krecovery: journal records walked: 5 of 5 (100%)\r\x1b[Krecovery: round 1: 0 object(s) cleaned\n");
    const written = collect("info", "json");
    text = "";
    new Progress("recovery", true, tty).count(5, 5, "journal records walked");
    expect(text).toBe("");
    expect(JSON.parse(written[0]!).msg).toBe("recovery: journal records walked: 5 of 5 (100%)");
  });
});

test("a log line written while a progress line is drawn in place starts on a line of its own", () => {
  let text = "";
  configureLogging({ level: "info", format: "text", write: (chunk) => void (text += chunk), now: () => TIME });
  const tty = { isTTY: true, write: (chunk: string) => ((text += chunk), true) } as unknown as NodeJS.WriteStream;
  const progress = new Progress("recovery", true, tty);
  progress.count(1, 2, "journal records walked");
  makeLogger("lsvd")("recovery: starting from checkpoint vol.00000401");
  progress.count(2, 2, "journal records walked");
  progress.clear();
  makeLogger("lsvd")("serving on x");
  expect(text.split("\n")).toEqual([
    "\r\x1b[Krecovery: journal records walked: 1 of 2 (50%)",
    `${TIME.toISOString()} lsvd: recovery: starting from checkpoint vol.00000401`,
    "\r\x1b[Krecovery: journal records walked: 2 of 2 (100%)",
    `${TIME.toISOString()} lsvd: serving on x`,
    "",
  ]);
});

describe("--log-level, --log-format and serve's --quiet (cli/log_options.ts)", () => {
  const parsed = (values: Record<string, string | boolean>) => ({ values, positionals: [] });

  test("--quiet is --log-level warn; with another level it is refused; bad values are named", async () => {
    const { applyLogOptions } = await import("../../src/cli/log_options.ts");
    applyLogOptions(parsed({ quiet: true }));
    expect({ warn: logEnabled("warn"), info: logEnabled("info") }).toEqual({ warn: true, info: false });
    applyLogOptions(parsed({ "log-level": "debug", "log-format": "json" }));
    expect(logEnabled("debug")).toBe(true);
    expect(() => applyLogOptions(parsed({ quiet: true, "log-level": "error" }))).toThrow("--quiet is --log-level warn; it cannot be given with --log-level error");
    expect(() => applyLogOptions(parsed({ "log-level": "loud" }))).toThrow("Invalid --log-level 'loud': expected one of error, warn, info, debug");
    expect(() => applyLogOptions(parsed({ "log-format": "xml" }))).toThrow("Invalid --log-format 'xml': expected one of text, json");
  });
});
