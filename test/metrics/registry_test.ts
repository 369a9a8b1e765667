// The metrics registry (src/metrics/registry.ts): the text exposition it renders (checked by promtool in
// test/e2e/observability_test.ts, by shape here), histogram buckets, label escaping, and the names it refuses.

import { describe, expect, test } from "bun:test";
import { formatValue, MetricsRegistry } from "../../src/metrics/registry.ts";

describe("metrics registry", () => {
  test("counters render HELP, TYPE and one sample per declared series, in declaration order", () => {
    const registry = new MetricsRegistry();
    const requests = registry.counter("t_requests_total", "Requests.", [{ op: "get" }, { op: "put" }]);
    requests.inc(3, 1);
    requests.inc(1, 0);
    requests.inc(2, 1);
    expect(registry.render()).toBe(
      ["# HELP t_requests_total Requests.", "# TYPE t_requests_total counter", 't_requests_total{op="get"} 1', 't_requests_total{op="put"} 5', ""].join("\n"),
    );
  });

  test("histograms count each observation in the first bucket whose bound is >= it, rendered cumulatively", () => {
    const registry = new MetricsRegistry();
    const latency = registry.histogram("t_seconds", "Latency.", [0.1, 1, 10]);
    for (const value of [0.05, 0.1, 0.5, 1, 5, 20, 20]) latency.observe(value);
    const lines = registry.render().split("\n").filter((line) => !line.startsWith("#") && line !== "");
    expect(lines).toEqual([
      't_seconds_bucket{le="0.1"} 2',
      't_seconds_bucket{le="1"} 4',
      't_seconds_bucket{le="10"} 5',
      't_seconds_bucket{le="+Inf"} 7',
      "t_seconds_sum 46.65",
      "t_seconds_count 7",
    ]);
    expect(latency.count()).toBe(7);
  });

  test("labelled histograms keep their series apart and put le last", () => {
    const registry = new MetricsRegistry();
    const latency = registry.histogram("t_seconds", "Latency.", [1], [{ command: "read" }, { command: "write" }]);
    latency.observe(0.5, 1);
    const text = registry.render();
    expect(text).toContain('t_seconds_bucket{command="read",le="1"} 0');
    expect(text).toContain('t_seconds_bucket{command="write",le="1"} 1');
    expect(text).toContain('t_seconds_count{command="write"} 1');
  });

  test("collected series are read at render time, after the beforeRender hooks", () => {
    const registry = new MetricsRegistry();
    let source = 1;
    let snapshot = 0;
    registry.beforeRender(() => (snapshot = source * 10));
    registry.collectedGauge("t_fill_bytes", "Fill.", () => snapshot);
    registry.collectedCounter("t_things_total", "Things.", [{ labels: { kind: "a" }, read: () => source }]);
    expect(registry.render()).toContain("t_fill_bytes 10\n");
    source = 7;
    const text = registry.render();
    expect(text).toContain("t_fill_bytes 70\n");
    expect(text).toContain('t_things_total{kind="a"} 7\n');
  });

  test("label values and help are escaped as the format says", () => {
    const registry = new MetricsRegistry();
    registry.collectedGauge("t_g", "Line one\nback\\slash.", [{ labels: { path: 'a"b\\c\nd' }, read: () => 1 }]);
    const text = registry.render();
    expect(text).toContain("# HELP t_g Line one\\nback\\\\slash.");
    expect(text).toContain('t_g{path="a\\"b\\\\c\\nd"} 1');
  });

  test("values: integers without exponent, fractions as they are, NaN and infinities by name", () => {
    expect([formatValue(12345678901234), formatValue(0.25), formatValue(NaN), formatValue(Infinity), formatValue(-Infinity)]).toEqual([
      "12345678901234",
      "0.25",
      "NaN",
      "+Inf",
      "-Inf",
    ]);
  });

  test("bad declarations are refused: names, duplicates, counters without _total, reserved labels, bad buckets", () => {
    const registry = new MetricsRegistry();
    registry.counter("t_ok_total", "Ok.");
    expect(() => registry.counter("t_ok_total", "Again.")).toThrow(/declared twice/);
    expect(() => registry.counter("t_requests", "No suffix.")).toThrow(/ends in _total/);
    expect(() => registry.counter("1bad_total", "Bad name.")).toThrow(/metric name/);
    expect(() => registry.counter("t_x_total", "Bad label.", [{ "bad-label": "x" }])).toThrow(/label name/);
    expect(() => registry.counter("t_y_total", "Reserved.", [{ __name: "x" }])).toThrow(/label name/);
    expect(() => registry.histogram("t_h", "Le.", [1], [{ le: "x" }])).toThrow(/reserved/);
    expect(() => registry.histogram("t_h2", "Order.", [1, 1])).toThrow(/increase/);
    expect(() => registry.histogram("t_h3", "Inf.", [1, Infinity])).toThrow(/finite/);
    expect(() => registry.counter("t_z_total", "Dup series.", [{ a: "1" }, { a: "1" }])).toThrow(/declared twice/);
    expect(() => registry.counter("t_nohelp_total", "")).toThrow(/has help/);
    const counter = registry.counter("t_up_total", "Up.");
    expect(() => counter.inc(-1)).toThrow(/only goes up/);
  });
});
