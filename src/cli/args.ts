// Argument parsing shared by every command: node:util parseArgs in strict mode, with errors worded for people.
// Each command declares its options and gets back typed values; --help is handled here.

import { parseArgs, type ParseArgsConfig } from "node:util";
import { InvalidArgumentError } from "../errors.ts";
import type { BackendOptions } from "../backend/backend_uri.ts";

export type OptionSpec = NonNullable<ParseArgsConfig["options"]>;

export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/** Parses argv against options; --help is always accepted. Throws InvalidArgumentError on unknown options, listing the valid ones. */
export function parseCommandArgs(argv: string[], options: OptionSpec): Parsed & { help: boolean } {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
    return { values: values as Parsed["values"], positionals, help: values.help === true };
  } catch (error) {
    const message = (error as Error).message.replace(/^TypeError \[[A-Z_]+\]: /, "");
    // parseArgs's hint for an unknown option ("To specify a positional argument ... use '--'") helps less than a list.
    const unknown = /^Unknown option '([^']*)'/.exec(message);
    if (unknown) throw new InvalidArgumentError(`unknown option '${unknown[1]}'; valid options: ${optionList(options)}`);
    throw new InvalidArgumentError(`${message}; valid options: ${optionList(options)}`);
  }
}

/** "--a, --b VALUE, ..., --help" */
export function optionList(options: OptionSpec): string {
  return [...Object.entries(options).map(([name, spec]) => (spec.type === "string" ? `--${name} VALUE` : `--${name}`)), "--help"].join(", ");
}

export function stringOption(parsed: Parsed, name: string): string | undefined {
  const value = parsed.values[name];
  return typeof value === "string" ? value : undefined;
}

/** Backend flags every command that opens a volume accepts. */
export const BACKEND_OPTIONS: OptionSpec = {
  "ceph-conf": { type: "string" },
  "ceph-keyring": { type: "string" },
  "ceph-client": { type: "string", default: "client.admin" },
  "s3-endpoint": { type: "string" },
  "s3-region": { type: "string" },
  "s3-access-key": { type: "string" },
  "s3-secret-key": { type: "string" },
};

export const BACKEND_HELP = `Backend options (VOLUME is /dir/obj, file:///dir/obj, rados://POOL/PREFIX or s3://BUCKET/PREFIX):
  --ceph-conf PATH       ceph.conf for rados:// (default: $CEPH_CONF or /etc/ceph/ceph.conf)
  --ceph-keyring PATH    keyring for rados://
  --ceph-client NAME     client name for rados:// (default client.admin)
  --s3-endpoint URL      S3 endpoint (default: $AWS_ENDPOINT_URL); path-style addressing when set
  --s3-region REGION     (default: $AWS_REGION or us-east-1)
  --s3-access-key KEY    (default: $AWS_ACCESS_KEY_ID)
  --s3-secret-key KEY    (default: $AWS_SECRET_ACCESS_KEY)`;

export function backendOptionsFrom(parsed: Parsed): BackendOptions {
  return {
    cephConf: stringOption(parsed, "ceph-conf"),
    cephKeyring: stringOption(parsed, "ceph-keyring"),
    cephClient: stringOption(parsed, "ceph-client"),
    s3Endpoint: stringOption(parsed, "s3-endpoint"),
    s3Region: stringOption(parsed, "s3-region"),
    s3AccessKey: stringOption(parsed, "s3-access-key"),
    s3SecretKey: stringOption(parsed, "s3-secret-key"),
  };
}

export function requirePositional(parsed: Parsed, count: number, usage: string): string[] {
  if (parsed.positionals.length !== count) {
    throw new InvalidArgumentError(`expected ${count} argument(s), got ${parsed.positionals.length}. Usage: ${usage}`);
  }
  return parsed.positionals;
}

export const VOLUME_HELP = "  --volume VOLUME        the volume, instead of the VOLUME argument";

/** The --volume option every command that names one volume accepts, instead of the positional VOLUME. */
export const VOLUME_OPTIONS: OptionSpec = { volume: { type: "string" } };

/**
 * The positional arguments named in `names` (one of them "VOLUME"), with VOLUME given either in its place or as
 * --volume (then the others shift up). Throws InvalidArgumentError with the usage when the count is wrong.
 */
export function namedArguments(parsed: Parsed, names: string[], usage: string): Record<string, string> {
  const volume = stringOption(parsed, "volume");
  const expected = volume === undefined ? names : names.filter((name) => name !== "VOLUME");
  if (parsed.positionals.length !== expected.length) {
    const given = parsed.positionals.length === 0 ? "none" : parsed.positionals.map((text) => `'${text}'`).join(" ");
    const volumeNote = volume === undefined ? "" : " (VOLUME given with --volume)";
    throw new InvalidArgumentError(`expected ${expected.join(" ") || "no arguments"}${volumeNote}, got ${given}. Usage: ${usage}`);
  }
  const result: Record<string, string> = {};
  expected.forEach((name, index) => (result[name] = parsed.positionals[index]!));
  if (volume !== undefined) result.VOLUME = volume;
  return result;
}

/** For commands that take a volume and --cache (serve, gc): VOLUME positional or --volume. */
export function requireVolumeAndCache(parsed: Parsed, usage: string): { volumeUri: string; cachePath: string } {
  const { VOLUME: volumeUri } = namedArguments(parsed, ["VOLUME"], usage);
  const cachePath = stringOption(parsed, "cache");
  if (!cachePath) throw new InvalidArgumentError(`--cache is required. Usage: ${usage}`);
  return { volumeUri: volumeUri!, cachePath };
}

/** --gc-threshold F: a share in [0, 1), or undefined when not given. */
export function gcThresholdOption(parsed: Parsed): number | undefined {
  const text = stringOption(parsed, "gc-threshold");
  if (text === undefined) return undefined;
  const threshold = Number(text);
  if (!(threshold >= 0 && threshold < 1)) throw new InvalidArgumentError(`Invalid --gc-threshold '${text}': expected a number in [0, 1)`);
  return threshold;
}
