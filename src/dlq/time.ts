/** CLI times: ISO 8601 (`2026-11-25T10:00:00Z`, `2026-11-25`) or a duration ago (`90s`, `15m`, `2h`, `7d`). */
const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

export function parseTime(value: string, now: number): number | undefined {
  const duration = /^(\d+(?:\.\d+)?)([smhdw])$/.exec(value.trim());
  if (duration) return now - Number(duration[1]) * (UNITS[duration[2] as string] as number);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value.trim())) return undefined;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : t;
}
