// The raw NBD client of test/nbd/raw_client.ts, pointed at a real `lsvd serve` by its URI and negotiated with GO.
// Protocol tests against the real server use it to send exactly the bytes a hostile or broken client would.

import { RawClient, type Endpoint } from "../nbd/raw_client.ts";

export type { Endpoint };

/** The socket address in an lsvd URI: nbd+unix:///?socket=PATH or nbd://HOST:PORT. */
export function endpointOf(uri: string): Endpoint {
  const unix = /^nbd\+unix:\/\/\/[^?]*\?socket=(.+)$/.exec(uri);
  if (unix) return { unix: unix[1]! };
  const tcp = /^nbd:\/\/([^:/]+):(\d+)/.exec(uri);
  if (tcp) return { hostname: tcp[1]!, port: Number(tcp[2]) };
  throw new Error(`endpointOf: not an NBD URI: ${uri}`);
}

export class RawNbdClient {
  private constructor(
    private readonly client: RawClient,
    readonly sizeBytes: number,
    readonly transmissionFlags: number,
  ) {}

  /** Connects and negotiates (GO on the default export, simple replies). */
  static async open(uri: string): Promise<RawNbdClient> {
    const client = await RawClient.connect(endpointOf(uri));
    const { sizeBytes, transmissionFlags } = await client.negotiate();
    return new RawNbdClient(client, sizeBytes, transmissionFlags);
  }

  request(...args: Parameters<RawClient["request"]>): Promise<void> {
    return this.client.request(...args);
  }

  readSimpleReply(dataBytes = 0): ReturnType<RawClient["readSimpleReply"]> {
    return this.client.readSimpleReply(dataBytes);
  }

  waitClosed(timeoutMs?: number): Promise<boolean> {
    return this.client.waitClosed(timeoutMs);
  }

  get closed(): boolean {
    return this.client.closed;
  }

  get pendingBytes(): number {
    return this.client.pendingBytes;
  }

  end(): void {
    this.client.end();
  }

  terminate(): void {
    this.client.terminate();
  }
}
