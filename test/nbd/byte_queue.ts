// Bytes received from a socket, queued as the chunks they arrived in, taken out in exact amounts. Shared by the
// test NBD clients (test/nbd/raw_client.ts, test/crash/_nbd_client.ts).

export class ByteQueue {
  private chunks: Uint8Array[] = [];
  private bytes = 0;

  get length(): number {
    return this.bytes;
  }

  push(chunk: Uint8Array): void {
    this.chunks.push(chunk);
    this.bytes += chunk.byteLength;
  }

  /** Takes exactly n bytes; the caller checked that length >= n. */
  take(n: number): Uint8Array {
    if (n > this.bytes) throw new Error(`ByteQueue: ${n} bytes wanted, ${this.bytes} queued`);
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0]!;
      const count = Math.min(chunk.byteLength, n - filled);
      out.set(chunk.subarray(0, count), filled);
      filled += count;
      if (count === chunk.byteLength) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(count);
    }
    this.bytes -= n;
    return out;
  }
}
