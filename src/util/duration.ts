/** Seconds in a duration written as `90`, `90s`, `15m`, `1h`, `2d`, `4w` or combinations such as `1h30m`. */
export function parseDuration(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isFinite(text) || text <= 0) throw new Error(`invalid duration ${text}: use a positive number of seconds`);
    return text;
  }
  const t = text.trim();
  if (/^\d+$/.test(t)) return parseDuration(Number(t));
  const re = /(\d+)\s*([smhdw])/gy;
  let total = 0;
  let pos = 0;
  for (let m = re.exec(t); m; m = re.exec(t)) {
    total += Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2] as 's' | 'm' | 'h' | 'd' | 'w'];
    pos = re.lastIndex;
  }
  if (pos !== t.length || total <= 0) throw new Error(`invalid duration "${text}": use e.g. 90s, 15m, 1h, 1h30m, 2d or 4w`);
  return total;
}
