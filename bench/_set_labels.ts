// The `--set key=value` labels the bench helpers copy into their JSON lines (bench/_fio_json.ts,
// bench/_device_latency_report.ts): each value parsed as JSON when it is JSON, else kept as a string.

export function parseSetLabels(pairs: readonly string[]): Record<string, unknown> {
  const labels: Record<string, unknown> = {};
  for (const pair of pairs) {
    const equals = pair.indexOf("=");
    if (equals <= 0) throw new Error(`--set wants key=value, not '${pair}'`);
    const text = pair.slice(equals + 1);
    let value: unknown = text;
    try {
      value = JSON.parse(text);
    } catch {
      // not JSON: keep the string
    }
    labels[pair.slice(0, equals)] = value;
  }
  return labels;
}
