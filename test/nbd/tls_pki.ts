// Test certificates made with openssl (Debian's openssl package, in scripts/install-deps.sh's test profile): a CA,
// a server certificate for localhost/127.0.0.1, a client certificate, and a second CA nobody trusts. Laid out as
// nbdkit, qemu-nbd and libnbd read them:
//   server/  ca-cert.pem server-cert.pem server-key.pem           (lsvd serve --tls-certificates)
//   client/  ca-cert.pem client-cert.pem client-key.pem           (libnbd tls-certificates=, qemu tls-creds-x509)
//   anonymous/ ca-cert.pem                                        (a client with no certificate of its own)
//   stranger/  ca-cert.pem client-cert.pem client-key.pem         (a client certificate from another CA)
//   revoked/   ca-cert.pem client-cert.pem client-key.pem         (signed by the CA, then revoked: server/ca-crl.pem)

import { mkdirSync, copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface TestPki {
  server: string;
  client: string;
  anonymous: string;
  stranger: string;
  revoked: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const child = Bun.spawn({ cmd: ["openssl", ...args], cwd, stdout: "pipe", stderr: "pipe", timeout: 30_000 });
  const stderr = await new Response(child.stderr).text();
  if ((await child.exited) !== 0) throw new Error(`openssl ${args.join(" ")} failed: ${stderr}`);
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(["req", "-x509", ...EC_KEY, "-keyout", `${name}-key.pem`, "-out", `${name}-cert.pem`, "-days", "2", "-subj", `/CN=lsvd test ${name}`], dir);
}

async function makeLeaf(dir: string, ca: string, name: string, subject: string, extensions: string): Promise<void> {
  writeFileSync(join(dir, `${name}.ext`), extensions);
  await openssl(["req", ...EC_KEY, "-keyout", `${name}-key.pem`, "-out", `${name}.csr`, "-subj", subject], dir);
  await openssl(
    ["x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}-cert.pem`, "-CAkey", `${ca}-key.pem`, "-CAcreateserial", "-out", `${name}-cert.pem`, "-days", "2", "-extfile", `${name}.ext`],
    dir,
  );
}

/** Revokes `certificate` (signed by ca-cert.pem in `dir`) and writes the CA's revocation list, ca-crl.pem. */
async function revoke(dir: string, certificate: string): Promise<void> {
  writeFileSync(join(dir, "index.txt"), "");
  writeFileSync(join(dir, "crlnumber"), "01\n");
  writeFileSync(
    join(dir, "ca.cnf"),
    "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\ncertificate = ca-cert.pem\nprivate_key = ca-key.pem\n",
  );
  await openssl(["ca", "-config", "ca.cnf", "-revoke", certificate], dir);
  await openssl(["ca", "-config", "ca.cnf", "-gencrl", "-out", "ca-crl.pem"], dir);
}

/** Makes the certificates under `root`; throws (the test fails) when openssl is missing. */
export async function makeTestPki(root: string): Promise<TestPki> {
  const work = join(root, "work");
  mkdirSync(work, { recursive: true });
  await makeCa(work, "ca");
  await makeCa(work, "other-ca");
  await makeLeaf(work, "ca", "server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
  await makeLeaf(work, "ca", "client", "/CN=lsvd test client", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
  await makeLeaf(work, "other-ca", "stranger", "/CN=lsvd test stranger", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
  await makeLeaf(work, "ca", "revoked", "/CN=lsvd test revoked", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
  await revoke(work, "revoked-cert.pem");
  const pki: TestPki = {
    server: join(root, "server"),
    client: join(root, "client"),
    anonymous: join(root, "anonymous"),
    stranger: join(root, "stranger"),
    revoked: join(root, "revoked"),
  };
  const layout: Array<[string, Record<string, string>]> = [
    [pki.server, { "ca-cert.pem": "ca-cert.pem", "ca-crl.pem": "ca-crl.pem", "server-cert.pem": "server-cert.pem", "server-key.pem": "server-key.pem" }],
    [pki.revoked, { "ca-cert.pem": "ca-cert.pem", "client-cert.pem": "revoked-cert.pem", "client-key.pem": "revoked-key.pem" }],
    [pki.client, { "ca-cert.pem": "ca-cert.pem", "client-cert.pem": "client-cert.pem", "client-key.pem": "client-key.pem" }],
    [pki.anonymous, { "ca-cert.pem": "ca-cert.pem" }],
    [pki.stranger, { "ca-cert.pem": "ca-cert.pem", "client-cert.pem": "stranger-cert.pem", "client-key.pem": "stranger-key.pem" }],
  ];
  for (const [dir, files] of layout) {
    mkdirSync(dir, { recursive: true });
    for (const [to, from] of Object.entries(files)) copyFileSync(join(work, from), join(dir, to));
  }
  return pki;
}
