// A small seeded PRNG (xorshift128+ over two 32-bit halves via splitmix seeding): one seed = one world.
// Tests print the seed; LSVD_SEED=<n> replays it.

export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    let x = seed >>> 0 || 0x9e3779b9;
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
  }

  /** sfc32: a fast generator with good statistical quality. */
  nextU32(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return n <= 1 ? 0 : Math.floor((this.nextU32() / 2 ** 32) * n);
  }

  chance(p: number): boolean {
    return this.nextU32() / 2 ** 32 < p;
  }

  shuffle<T>(items: T[]): void {
    for (let index = items.length - 1; index > 0; index--) {
      const other = this.int(index + 1);
      [items[index], items[other]] = [items[other]!, items[index]!];
    }
  }

  fill(bytes: Uint8Array): void {
    for (let index = 0; index < bytes.length; index += 4) {
      const value = this.nextU32();
      bytes[index] = value & 0xff;
      if (index + 1 < bytes.length) bytes[index + 1] = (value >>> 8) & 0xff;
      if (index + 2 < bytes.length) bytes[index + 2] = (value >>> 16) & 0xff;
      if (index + 3 < bytes.length) bytes[index + 3] = value >>> 24;
    }
  }
}

export function seedFromEnv(fallback: number): number {
  const text = process.env.LSVD_SEED;
  return text ? Number(text) : fallback;
}
