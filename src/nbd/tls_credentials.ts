// TLS credentials for the NBD server: an X.509 directory in the layout nbdkit and qemu-nbd use
// (ca-cert.pem, server-cert.pem, server-key.pem, optionally ca-crl.pem), loaded and checked once at start-up so that a
// bad file is one clear error before anything is served, not a failed handshake per client.
// Rules in docs/architecture.md, "TLS".
//
// PSK (psktool's `username:hexkey` files) is not offered: Bun's TLS (BoringSSL) exposes no PSK callback, neither
// in Bun.listen/upgradeTLS options nor in node:tls (pskCallback is ignored, the handshake fails with
// NO_SHARED_CIPHER). The evidence and the commands that show it are in docs/architecture.md, "TLS".

import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createSecureContext } from "node:tls";
import { InvalidArgumentError } from "../errors.ts";

export const TLS_CA_CERT_FILE = "ca-cert.pem";
export const TLS_CA_CRL_FILE = "ca-crl.pem";
export const TLS_SERVER_CERT_FILE = "server-cert.pem";
export const TLS_SERVER_KEY_FILE = "server-key.pem";

export interface TlsCredentials {
  directory: string;
  /** PEM text: the server's certificate (chain) and its private key. */
  cert: string;
  key: string;
  /** Clients must present a certificate signed by `ca` (and not revoked by `crl`). */
  verifyPeer: boolean;
  ca: string | null;
  crl: string | null;
  /** The server certificate's subject and expiry, for the start-up log line. */
  subject: string;
  validTo: Date;
  validFrom: Date;
}

/** The options Bun's socket.upgradeTLS takes. */
export interface TlsServerOptions {
  cert: string;
  key: string;
  ca?: string;
  crl?: string;
  requestCert: boolean;
  rejectUnauthorized: boolean;
}

function readPem(directory: string, file: string, why: string): string {
  const path = join(directory, file);
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new InvalidArgumentError(`Cannot read ${path} (${why}): ${code}`);
  }
}

function readOptionalPem(directory: string, file: string): string | null {
  try {
    return readFileSync(join(directory, file), "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new InvalidArgumentError(`Cannot read ${join(directory, file)}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
}

/**
 * Loads DIR/server-cert.pem and DIR/server-key.pem (and DIR/ca-cert.pem, DIR/ca-crl.pem when `verifyPeer`), and
 * checks them with the TLS library that will use them: PEM that does not parse, a key that is not the
 * certificate's, or a missing CA certificate is an InvalidArgumentError naming the file.
 */
export function loadX509Credentials(directory: string, verifyPeer: boolean): TlsCredentials {
  const cert = readPem(directory, TLS_SERVER_CERT_FILE, "the server's certificate");
  const key = readPem(directory, TLS_SERVER_KEY_FILE, "the server's private key");
  const ca = verifyPeer ? readPem(directory, TLS_CA_CERT_FILE, "the CA that signs client certificates, needed by --tls-verify-peer") : null;
  const crl = verifyPeer ? readOptionalPem(directory, TLS_CA_CRL_FILE) : null;
  let parsed: X509Certificate;
  try {
    parsed = new X509Certificate(cert);
  } catch (error) {
    throw new InvalidArgumentError(`Cannot use ${join(directory, TLS_SERVER_CERT_FILE)}: not a PEM certificate (${(error as Error).message})`);
  }
  const credentials: TlsCredentials = {
    directory,
    cert,
    key,
    verifyPeer,
    ca,
    crl,
    subject: parsed.subject.replace(/\n/g, ", "),
    validFrom: parsed.validFromDate,
    validTo: parsed.validToDate,
  };
  try {
    createSecureContext(tlsServerOptions(credentials));
  } catch (error) {
    const files = [TLS_SERVER_CERT_FILE, TLS_SERVER_KEY_FILE, ...(ca === null ? [] : [TLS_CA_CERT_FILE]), ...(crl === null ? [] : [TLS_CA_CRL_FILE])];
    throw new InvalidArgumentError(`Cannot use the TLS credentials in ${directory} (${files.join(", ")}): ${(error as Error).message}`);
  }
  return credentials;
}

export function tlsServerOptions(credentials: TlsCredentials): TlsServerOptions {
  const options: TlsServerOptions = {
    cert: credentials.cert,
    key: credentials.key,
    requestCert: credentials.verifyPeer,
    rejectUnauthorized: credentials.verifyPeer,
  };
  // No version option: Bun's TLS refuses TLS 1.0 and 1.1 by default, as the spec asks ("TLS versions"); a test checks.
  if (credentials.ca !== null) options.ca = credentials.ca;
  if (credentials.crl !== null) options.crl = credentials.crl;
  return options;
}

/** A warning for the log when the server certificate is not valid now (clients will refuse it), else null. */
export function certificateValidityWarning(credentials: TlsCredentials, nowMs: number): string | null {
  const file = join(credentials.directory, TLS_SERVER_CERT_FILE);
  if (nowMs > credentials.validTo.getTime()) return `${file} expired on ${credentials.validTo.toISOString()}: clients will refuse it`;
  if (nowMs < credentials.validFrom.getTime()) return `${file} is not valid before ${credentials.validFrom.toISOString()}: clients will refuse it`;
  return null;
}
