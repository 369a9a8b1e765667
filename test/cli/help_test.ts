// Help that tells the truth: every command's --help against what its parser accepts and fills in (in-process, from
// the same option tables), the real binary accepting every option its help lists, `lsvd help CMD`, option errors
// listing the valid options, serve's --name as its help describes it, human sizes, and one rule for the directories
// of new files (created when missing, refused the same way when a file is in the way).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { COMMANDS } from "../../src/cli/commands/index.ts";
import type { OptionSpec } from "../../src/cli/args.ts";
import { parseSize } from "../../src/util/size.ts";
import { STATUS_EXIT } from "../../src/cli/commands/status.ts";
import { LsvdServer, TOOL_ENV, cleanupAll, ensureBuilt, lsvd, makeTempDir, run } from "../e2e/_harness.ts";

const TEST_TIMEOUT_MS = 120_000;

/** Each option line of a help text ("  --name ARG   text", with its indented continuation lines), whitespace folded. */
export function helpOptions(help: string): Map<string, string> {
  const options = new Map<string, string>();
  let current: string | null = null;
  for (const line of help.split("\n")) {
    const start = /^ {2,}--([a-z0-9-]+)/.exec(line);
    if (start) {
      current = start[1]!;
      options.set(current, line.trim());
    } else if (current !== null && /^ {4,}\S/.test(line)) {
      options.set(current, `${options.get(current)} ${line.trim()}`);
    } else {
      current = null;
    }
  }
  return options;
}

/** The default a help line states: "(default X" followed by ")", ";" or ",". Descriptive ones ("(default: ...") are not values. */
function statedDefault(text: string): string | undefined {
  const match = /\(default ([^\s;,)]*)[;,)]/.exec(text);
  return match ? match[1]!.replace(/^"(.*)"$/, "$1") : undefined;
}

/** Arguments giving every option of `spec` a harmless value, then --help: the parser must accept them all. */
function everyOption(spec: OptionSpec): string[] {
  return Object.entries(spec).flatMap(([name, option]) => (option.type === "string" ? [`--${name}`, "1"] : [`--${name}`]));
}

let dir: string;
beforeAll(async () => {
  await ensureBuilt();
  dir = makeTempDir("help");
}, TEST_TIMEOUT_MS); // ensureBuilt may compile
afterAll(cleanupAll);

describe("every command's help against its parser", () => {
  for (const command of COMMANDS) {
    test(`${command.name}: every option in help is accepted, every accepted option is in help, stated defaults are the parser's`, () => {
      const listed = helpOptions(command.help);
      expect([...listed.keys()].sort()).toEqual(Object.keys(command.options).sort());
      for (const [name, text] of listed) {
        const parserDefault = command.options[name]!.default;
        expect({ name, stated: statedDefault(text) }).toEqual({ name, stated: parserDefault === undefined ? undefined : String(parserDefault) });
      }
    });
  }

  test("the binary accepts every option each help lists; lsvd help CMD prints the same text", async () => {
    for (const command of COMMANDS) {
      const options = [...helpOptions(command.help).keys()];
      const args = options.flatMap((name) => (command.options[name]?.type === "boolean" ? [`--${name}`] : [`--${name}`, "1"]));
      const result = await lsvd([command.name, ...args, "--help"]);
      expect({ command: command.name, exitCode: result.exitCode, stderr: result.stderr }).toEqual({ command: command.name, exitCode: 0, stderr: "" });
      expect(result.stdout).toBe(command.help);
      const viaHelp = await lsvd(["help", command.name]);
      expect({ exitCode: viaHelp.exitCode, same: viaHelp.stdout === command.help }).toEqual({ exitCode: 0, same: true });
      expect(everyOption(command.options).length).toBeGreaterThanOrEqual(args.length);
    }
    const unknown = await lsvd(["help", "frobnicate"]);
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command 'frobnicate' \(commands: mkdisk, .*resize.*\)/);
  }, TEST_TIMEOUT_MS);

  test("an unknown option is refused in one line that lists the valid options", async () => {
    const result = await lsvd(["rm", "--frobnicate", "/tmp/x"]);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toBe(
      `lsvd rm: unknown option '--frobnicate'; valid options: --json, --volume VALUE, --lease-seconds VALUE, --ceph-conf VALUE, --ceph-keyring VALUE, --ceph-client VALUE, --s3-endpoint VALUE, --s3-region VALUE, --s3-access-key VALUE, --s3-secret-key VALUE, --help\n`,
    );
  });
});

describe("serve --name does what its help says", () => {
  test('default "": only the default export; --name foo: "foo" or the default export, nothing else', async () => {
    const volume = join(dir, "backend", "vol");
    expect((await lsvd(["mkdisk", "--size", "16m", volume])).exitCode).toBe(0);
    expect((await lsvd(["mkcache", "--volume", volume, "--size", "64m", join(dir, "cache")])).exitCode).toBe(0);
    const sizeOf = async (server: LsvdServer, name: string) => {
      const socket = server.uri.replace(/^nbd\+unix:\/\/\/\?socket=/, "");
      return (await run(["nbdinfo", "--size", `nbd+unix:///${name}?socket=${socket}`], { env: TOOL_ENV })).exitCode;
    };
    for (const [args, accepted, refused] of [[[], [""], ["foo"]], [["--name", "foo"], ["", "foo"], ["bar"]]] as const) {
      const server = await LsvdServer.start({ volume, cache: join(dir, "cache"), transport: "unix", dir, extraArgs: [...args] });
      try {
        for (const name of accepted) expect({ args, name, exitCode: await sizeOf(server, name) }).toEqual({ args, name, exitCode: 0 });
        for (const name of refused) expect({ args, name, refused: (await sizeOf(server, name)) !== 0 }).toEqual({ args, name, refused: true });
      } finally {
        expect((await server.stop()).exitCode).toBe(0);
      }
    }
  }, TEST_TIMEOUT_MS);
});

describe("one argument style", () => {
  test("human sizes: k/m/g/t with an optional b or ib, any case; anything else is refused by name", () => {
    for (const [text, bytes] of [["1gb", 1024 ** 3], ["1GiB", 1024 ** 3], ["1G", 1024 ** 3], ["512MiB", 512 * 1024 ** 2], ["64kb", 65536], ["2t", 2 * 1024 ** 4], ["4096", 4096], ["4096b", 4096], ["1.5g", 1.5 * 1024 ** 3]] as const) {
      expect({ text, bytes: parseSize(text) }).toEqual({ text, bytes });
    }
    for (const text of ["1x", "1ib", "1gibb", "-1", "", "g", "1 g b"]) expect(() => parseSize(text)).toThrow(/Invalid size .*expected a number with an optional binary unit/);
  });

  test("VOLUME positional or --volume in each command that names one; a wrong count is refused with the usage", async () => {
    const volume = join(dir, "backend", "vol");
    for (const args of [["lock", "show", "--volume", volume], ["lock", "show", volume], ["fsck", "--volume", volume], ["fsck", volume]]) {
      expect({ args, exitCode: (await lsvd(args)).exitCode }).toEqual({ args, exitCode: 0 });
    }
    const both = await lsvd(["fsck", "--volume", volume, volume]);
    expect(both.stderr).toMatch(/expected no arguments \(VOLUME given with --volume\), got '\S+'\. Usage: lsvd fsck/);
    const missing = await lsvd(["export", volume]);
    expect(missing.stderr).toMatch(/^lsvd export: expected VOLUME FILE, got '\S+'\. Usage: lsvd export/);
  }, TEST_TIMEOUT_MS);

  test("directories of new files are created when missing, and refused the same way when a file is in the way", async () => {
    const blocker = join(dir, "blocker");
    writeFileSync(blocker, "a file, not a directory");
    const volume = join(dir, "backend", "vol");
    const created = [
      ["mkdisk", "--size", "16m", join(dir, "new1", "a", "vol")],
      ["mkcache", "--volume", volume, "--size", "64m", join(dir, "new2", "a", "cache")],
      ["export", volume, join(dir, "new3", "a", "image")],
    ];
    for (const args of created) expect({ args, exitCode: (await lsvd(args)).exitCode }).toEqual({ args, exitCode: 0 });
    const refused = [
      ["mkdisk", "--size", "16m", join(blocker, "a", "vol")],
      ["mkcache", "--volume", volume, "--size", "64m", join(blocker, "a", "cache")],
      ["export", volume, join(blocker, "a", "image")],
    ];
    for (const args of [...refused, ["serve", "--cache", join(dir, "no-cache"), "--socket", join(dir, "refused.sock"), "--admin-socket", join(blocker, "a", "admin.asok"), volume]]) {
      const result = await lsvd(args);
      expect({ args, exitCode: result.exitCode }).toEqual({ args, exitCode: 1 });
      expect(result.stderr).toMatch(new RegExp(`^lsvd ${args[0]}: Cannot create (the )?directory ${join(blocker, "a")}.*ENOTDIR.*\\n$`));
    }
  }, TEST_TIMEOUT_MS);
});

describe("status does what its help says", () => {
  test("exit 3 for a volume nobody serves (VOLUME or --volume); VOLUME and --admin-socket: one of them", async () => {
    const volume = join(dir, "backend", "vol");
    const statusHelp = COMMANDS.find((command) => command.name === "status")!.help;
    expect(statusHelp).toContain(`Exit status: ${STATUS_EXIT.answered} the server answered; ${STATUS_EXIT.notServed} the volume is not served`);
    for (const args of [["status", volume], ["status", "--volume", volume]]) {
      const result = await lsvd(args);
      expect({ args, exitCode: result.exitCode }).toEqual({ args, exitCode: STATUS_EXIT.notServed });
      expect(result.stderr).toMatch(/^lsvd status: volume file:\/\/\S+ is not served \(its lease is (released|absent)\)\n$/);
    }
    const json = await lsvd(["status", "--json", volume]);
    expect({ exitCode: json.exitCode, served: JSON.parse(json.stdout).served }).toEqual({ exitCode: STATUS_EXIT.notServed, served: false });
    for (const args of [["status"], ["status", "--admin-socket", join(dir, "a.asok"), volume]]) {
      const result = await lsvd(args);
      expect({ args, exitCode: result.exitCode }).toEqual({ args, exitCode: 1 });
      expect(result.stderr).toContain("expected VOLUME or --admin-socket PATH (one of them). Usage: lsvd status");
    }
    const nobody = await lsvd(["status", "--admin-socket", join(dir, "nobody.asok")]);
    expect({ exitCode: nobody.exitCode, stderr: nobody.stderr }).toEqual({ exitCode: STATUS_EXIT.notServed, stderr: `lsvd status: nothing answers on admin socket ${join(dir, "nobody.asok")} (ENOENT)\n` });
  }, TEST_TIMEOUT_MS);
});
