// Metrics registry: counters, gauges and histograms, and the Prometheus text exposition of them (format 0.0.4).
// No I/O: src/metrics/http.ts serves render() at /metrics; what `lsvd serve` exports is listed in
// docs/operations.md, "Metrics".
//
// Two ways a value gets here, as in the Prometheus client libraries:
// - recorded: Counter.inc(), Histogram.observe() on the hot path. Every series is made when its metric is declared
//   (label values are fixed lists), so recording allocates nothing: a counter is a number in a Float64Array slot, a
//   histogram observation is a search over its bucket bounds and three stores.
// - collected: a function read at scrape time (gauges like journal fill, and counters the parts already keep, e.g.
//   the NBD server's and the write path's), so the hot path pays nothing for them at all.
//
// Invariants (asserted when declared): names match [a-zA-Z_:][a-zA-Z0-9_:]*, are unique, counters end in _total;
// label names match [a-zA-Z_][a-zA-Z0-9_]* and never start with __; bucket bounds strictly increase and are finite
// (+Inf is implicit).

import { assert } from "../errors.ts";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Latency buckets in seconds: 50 us to 10 s, roughly x2.5 per step (NBD requests, backend requests). */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

type Labels = Readonly<Record<string, string>>;
type Kind = "counter" | "gauge" | "histogram";

interface Family {
  readonly name: string;
  readonly help: string;
  readonly kind: Kind;
  render(out: string[]): void;
}

/** `{a="x",b="y"}` with label values escaped as the format says (backslash, double quote, newline). */
function labelText(labels: Labels, extra?: [string, string]): string {
  const parts = Object.entries(labels).map(([name, value]) => `${name}="${escapeLabelValue(value)}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function escapeHelp(help: string): string {
  return help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** A sample value as the format writes it: integers without exponent, NaN and infinities by name. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  if (Number.isInteger(value) && Math.abs(value) < 1e21) return value.toFixed(0);
  return String(value);
}

function checkLabels(labelSets: readonly Labels[]): void {
  const seen = new Set<string>();
  for (const labels of labelSets) {
    for (const name of Object.keys(labels)) {
      assert(LABEL_NAME.test(name) && !name.startsWith("__"), `metric label name '${name}'`);
      assert(name !== "le", "label 'le' is reserved for histogram buckets");
    }
    const key = labelText(labels);
    assert(!seen.has(key), `metric series ${key} declared twice`);
    seen.add(key);
  }
}

/** A counter with one series per label set, indexed by position in the declared list (no lookup per increment). */
export class Counter implements Family {
  readonly kind = "counter";
  private readonly values: Float64Array;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelSets: readonly Labels[],
  ) {
    this.values = new Float64Array(labelSets.length);
  }

  /** Adds `amount` (>= 0) to series `index` (default the first, for a counter without labels). */
  inc(amount = 1, index = 0): void {
    assert(amount >= 0, "a counter only goes up"); // a constant message: nothing built per call
    this.values[index]! += amount;
  }

  value(index = 0): number {
    return this.values[index]!;
  }

  render(out: string[]): void {
    this.labelSets.forEach((labels, index) => out.push(`${this.name}${labelText(labels)} ${formatValue(this.values[index]!)}`));
  }
}

/** Counters or gauges read at scrape time: one function per series. */
class Collected implements Family {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly kind: "counter" | "gauge",
    private readonly series: ReadonlyArray<{ labels: Labels; read: () => number }>,
  ) {}

  render(out: string[]): void {
    for (const { labels, read } of this.series) out.push(`${this.name}${labelText(labels)} ${formatValue(read())}`);
  }
}

/**
 * A histogram: per series, a count for each bucket (cumulated only when rendered), the sum and the count. Buckets are
 * preallocated; observe() finds the first bound >= value by binary search.
 */
export class Histogram implements Family {
  readonly kind = "histogram";
  /** counts[series * (bounds + 1) + bucket]; the last bucket of a series is +Inf. */
  private readonly counts: Float64Array;
  private readonly sums: Float64Array;
  private readonly stride: number;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
    private readonly labelSets: readonly Labels[],
  ) {
    assert(bounds.length > 0, `histogram ${name} has buckets`);
    for (let index = 0; index < bounds.length; index++) {
      assert(Number.isFinite(bounds[index]!), `histogram ${name}: bucket bounds are finite (+Inf is implicit)`);
      assert(index === 0 || bounds[index]! > bounds[index - 1]!, `histogram ${name}: bucket bounds increase`);
    }
    this.stride = bounds.length + 1;
    this.counts = new Float64Array(labelSets.length * this.stride);
    this.sums = new Float64Array(labelSets.length);
  }

  observe(value: number, index = 0): void {
    const bounds = this.bounds;
    let low = 0;
    let high = bounds.length; // answer in [low, high]: the first bound >= value, or bounds.length for +Inf
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (bounds[middle]! >= value) high = middle;
      else low = middle + 1;
    }
    this.counts[index * this.stride + low]! += 1;
    this.sums[index]! += value;
  }

  /** Observations in series `index` (tests). */
  count(index = 0): number {
    let total = 0;
    for (let bucket = 0; bucket < this.stride; bucket++) total += this.counts[index * this.stride + bucket]!;
    return total;
  }

  render(out: string[]): void {
    this.labelSets.forEach((labels, index) => {
      let cumulative = 0;
      for (let bucket = 0; bucket < this.stride; bucket++) {
        cumulative += this.counts[index * this.stride + bucket]!;
        const le = bucket < this.bounds.length ? formatValue(this.bounds[bucket]!) : "+Inf";
        out.push(`${this.name}_bucket${labelText(labels, ["le", le])} ${formatValue(cumulative)}`);
      }
      out.push(`${this.name}_sum${labelText(labels)} ${formatValue(this.sums[index]!)}`);
      out.push(`${this.name}_count${labelText(labels)} ${formatValue(cumulative)}`);
    });
  }
}

export class MetricsRegistry {
  private readonly families: Family[] = [];
  private readonly names = new Set<string>();
  private readonly beforeRenderHooks: Array<() => void> = [];

  /** Runs `hook` at the start of every render(): collected series can read one snapshot of their source per scrape. */
  beforeRender(hook: () => void): void {
    this.beforeRenderHooks.push(hook);
  }

  private add<F extends Family>(family: F): F {
    assert(METRIC_NAME.test(family.name), `metric name '${family.name}'`);
    assert(!this.names.has(family.name), `metric ${family.name} declared twice`);
    assert(family.kind !== "counter" || family.name.endsWith("_total"), `counter ${family.name} ends in _total`);
    assert(family.help.length > 0, `metric ${family.name} has help`);
    this.names.add(family.name);
    this.families.push(family);
    return family;
  }

  /** A recorded counter; `labelSets` lists every series (default: one, without labels). */
  counter(name: string, help: string, labelSets: readonly Labels[] = [{}]): Counter {
    checkLabels(labelSets);
    return this.add(new Counter(name, help, labelSets));
  }

  histogram(name: string, help: string, bounds: readonly number[], labelSets: readonly Labels[] = [{}]): Histogram {
    checkLabels(labelSets);
    return this.add(new Histogram(name, help, bounds, labelSets));
  }

  /** A counter whose series are read at scrape time (counters another part keeps). */
  collectedCounter(name: string, help: string, series: ReadonlyArray<{ labels?: Labels; read: () => number }>): void {
    this.addCollected(name, help, "counter", series);
  }

  /** A gauge whose series are read at scrape time. */
  collectedGauge(name: string, help: string, series: ReadonlyArray<{ labels?: Labels; read: () => number }> | (() => number)): void {
    this.addCollected(name, help, "gauge", typeof series === "function" ? [{ read: series }] : series);
  }

  private addCollected(name: string, help: string, kind: "counter" | "gauge", series: ReadonlyArray<{ labels?: Labels; read: () => number }>): void {
    const full = series.map(({ labels, read }) => ({ labels: labels ?? {}, read }));
    checkLabels(full.map(({ labels }) => labels));
    this.add(new Collected(name, help, kind, full));
  }

  /** The text exposition: HELP and TYPE, then the samples, of every family in declaration order. */
  render(): string {
    for (const hook of this.beforeRenderHooks) hook();
    const out: string[] = [];
    for (const family of this.families) {
      out.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
      out.push(`# TYPE ${family.name} ${family.kind}`);
      family.render(out);
    }
    out.push("");
    return out.join("\n");
  }
}
