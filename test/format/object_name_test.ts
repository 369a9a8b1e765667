import { describe, expect, test } from "bun:test";
import { leaseName, objectName, parseObjectName } from "../../src/format/object_name.ts";

describe("object names", () => {
  test("eight lowercase hex digits after the prefix", () => {
    expect(objectName("obj", 0x1a)).toBe("obj.0000001a");
    expect(objectName("pool/vol", 0xffffffff)).toBe("pool/vol.ffffffff");
    expect(objectName("/dir/obj", 1)).toBe("/dir/obj.00000001");
  });

  test("round trip", () => {
    for (const seq of [0, 1, 42, 0xabcdef, 0x7fffffff, 0xffffffff]) {
      expect(parseObjectName("a.b", objectName("a.b", seq))).toBe(seq);
    }
  });

  test("anything else is not an object name", () => {
    for (const name of ["obj", "obj.", "obj.1a", "obj.0000001A", "obj.000000001a", "obj-0000001a", "ob.0000001a",
      "xobj.0000001a", "obj.0000001g", "obj.+000001a", "obj. 000001a", "other.0000001a"]) {
      expect(parseObjectName("obj", name)).toBeNull();
    }
  });

  test("the lease object is named apart from every seq name", () => {
    expect(leaseName("obj")).toBe("obj.lease");
    expect(parseObjectName("obj", leaseName("obj"))).toBeNull();
    expect(leaseName("obj").startsWith("obj.")).toBe(true); // listed with the objects; parse tells them apart
  });

  test("sequence numbers are uint32", () => {
    expect(() => objectName("obj", -1)).toThrow();
    expect(() => objectName("obj", 2 ** 32)).toThrow();
    expect(() => objectName("obj", 1.5)).toThrow();
    expect(() => objectName("", 1)).toThrow();
  });
});
