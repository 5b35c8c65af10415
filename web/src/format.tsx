/** "1 row", "2 rows". */
export const plural = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;

/**
 * The masked-values marker: an inline SVG shield and the count (an emoji shield renders as an empty box where no
 * emoji font is installed, as in Debian's chromium).
 */
export function MaskedMark({ masked }: { masked: Record<string, number> }) {
  const total = Object.values(masked).reduce((n, v) => n + v, 0);
  const title = `${plural(total, 'value')} masked: ${Object.entries(masked).map(([k, v]) => `${k} ${v}`).join(', ')}`;
  return (
    <span className="masked" title={title} aria-label={title} data-testid="masked-mark">
      <svg viewBox="0 0 16 16" width="12" height="12" aria-hidden="true">
        <path d="M8 1 2 3.2v4.3c0 3.6 2.5 6.3 6 7.5 3.5-1.2 6-3.9 6-7.5V3.2z" fill="currentColor" />
      </svg>
      {total}
    </span>
  );
}
