/** Case-insensitive glob (`*` any run, `?` one char) compiled to a RegExp. */
const cache = new Map<string, RegExp>();
export function globToRegExp(glob: string): RegExp {
  let re = cache.get(glob);
  if (!re) {
    const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
    re = new RegExp(`^${body}$`, 'i');
    cache.set(glob, re);
  }
  return re;
}
export const globMatch = (glob: string, value: string): boolean => globToRegExp(glob).test(value);

/** Whether a name is served by an allow-list of globs (an empty list serves every name). */
export const servedBy = (globs: readonly string[], name: string): boolean => globs.length === 0 || globs.some((g) => globMatch(g, name));
