// `lsvd serve`'s TLS options: --tls off|on|require, --tls-certificates DIR, --tls-verify-peer, --tls-psk (refused:
// the runtime has no TLS-PSK). Turns them into the NBD server's TLS settings, loading and checking the credentials
// before anything is bound. Rules in docs/architecture.md, "TLS".

import { InvalidArgumentError, NotSupportedError } from "../errors.ts";
import type { TlsMode } from "../nbd/handshake.ts";
import type { NbdListenOptions } from "../nbd/server.ts";
import { certificateValidityWarning, loadX509Credentials, tlsServerOptions } from "../nbd/tls_credentials.ts";
import type { LogFn } from "../util/log.ts";
import { stringOption, type OptionSpec, type Parsed } from "./args.ts";

const TLS_MODES: readonly TlsMode[] = ["off", "on", "require"];

export const TLS_OPTIONS: OptionSpec = {
  tls: { type: "string", default: "off" },
  "tls-certificates": { type: "string" },
  "tls-verify-peer": { type: "boolean" },
  "tls-psk": { type: "string" },
};

export const TLS_HELP = `TLS (NBD_OPT_STARTTLS, over TCP and unix sockets alike):
  --tls MODE             off: no TLS (STARTTLS is refused); on: clients may start TLS or stay in the clear;
                         require: until a client starts TLS, every option but STARTTLS and ABORT is refused
                         and NBD_OPT_EXPORT_NAME hangs up (default off)
  --tls-certificates DIR X.509 credentials in DIR, named as nbdkit and qemu-nbd name them: server-cert.pem
                         and server-key.pem; ca-cert.pem (and ca-crl.pem if there) with --tls-verify-peer.
                         Needed by --tls on and --tls require; checked at start-up (exit 1 if unusable)
  --tls-verify-peer      clients must present a certificate signed by DIR/ca-cert.pem; others fail the TLS
                         handshake (default: any client may connect, as with nbdkit)
  --tls-psk FILE         pre-shared keys (psktool's username:hexkey files): refused, this build's TLS library
                         offers no PSK ciphers; use --tls-certificates`;

/** The server's TLS settings from the parsed options (undefined for --tls off); logs what it serves with. */
export function tlsFrom(parsed: Parsed, log: LogFn): NbdListenOptions["tls"] {
  const mode = parsed.values.tls ?? "off";
  if (typeof mode !== "string" || !(TLS_MODES as readonly string[]).includes(mode)) {
    throw new InvalidArgumentError(`Invalid --tls '${String(mode)}': expected ${TLS_MODES.join(", ")}`);
  }
  const directory = stringOption(parsed, "tls-certificates");
  const verifyPeer = parsed.values["tls-verify-peer"] === true;
  if (stringOption(parsed, "tls-psk") !== undefined) {
    throw new NotSupportedError(
      "--tls-psk is not available: the TLS library of the runtime lsvd is built on (Bun, BoringSSL) offers no pre-shared key ciphers; use --tls-certificates DIR",
    );
  }
  if (mode === "off") {
    if (directory !== undefined || verifyPeer) throw new InvalidArgumentError("--tls-certificates and --tls-verify-peer need --tls on or --tls require");
    return undefined;
  }
  if (directory === undefined) throw new InvalidArgumentError(`--tls ${mode} needs --tls-certificates DIR`);
  const credentials = loadX509Credentials(directory, verifyPeer);
  const warning = certificateValidityWarning(credentials, Date.now());
  if (warning !== null) log(`warning: ${warning}`);
  log(
    `TLS ${mode === "require" ? "required" : "offered"}: certificate ${credentials.subject} from ${directory}, valid until ${credentials.validTo.toISOString()}${verifyPeer ? "; client certificates verified against ca-cert.pem" : ""}`,
  );
  return { mode: mode as Exclude<TlsMode, "off">, options: tlsServerOptions(credentials) };
}
