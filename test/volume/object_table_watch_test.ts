// The object table's displaced-sectors watch (src/volume/object_table.ts), which starts a garbage collection round
// early once clients have made enough garbage: it fires exactly once, when the count reaches its mark, not before.

import { describe, expect, test } from "bun:test";
import { ObjectKind, ObjectTable } from "../../src/volume/object_table.ts";

describe("object table: displaced-sectors watch", () => {
  test("fires once when the displaced count reaches the mark, never before; a new watch replaces it; null cancels", () => {
    const table = new ObjectTable();
    table.add(1, { kind: ObjectKind.Data, hdrSectors: 1, dataSectors: 100, liveSectors: 100 });
    let fired = 0;
    table.watchDisplaced({ atSectors: 10, fire: () => (fired += 1) });
    table.displaced(1, 9);
    expect(fired).toBe(0);
    table.displaced(1, 1);
    expect(fired).toBe(1);
    table.displaced(1, 5);
    expect(fired).toBe(1);
    expect(table.get(1)!.liveSectors).toBe(85);
    table.watchDisplaced({ atSectors: 100, fire: () => (fired += 10) });
    table.watchDisplaced({ atSectors: 20, fire: () => (fired += 100) });
    table.displaced(1, 5);
    expect(fired).toBe(101);
    table.watchDisplaced({ atSectors: 30, fire: () => (fired += 1000) });
    table.watchDisplaced(null);
    table.displaced(1, 20);
    expect(fired).toBe(101);
  });
});
