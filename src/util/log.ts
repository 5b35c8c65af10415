/** Operator log on stderr, one line per event. SLUICE_LOG=debug|info|warn|error (default info). */
const LEVELS = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const;
type Level = keyof typeof LEVELS;
const threshold = () => LEVELS[(process.env.SLUICE_LOG as Level) ?? 'info'] ?? 20;
const emit = (level: Level, msg: string) => {
  if (LEVELS[level] >= threshold()) process.stderr.write(`${new Date().toISOString()} ${level.toUpperCase()} ${msg}\n`);
};
export const log = {
  debug: (m: string) => emit('debug', m),
  info: (m: string) => emit('info', m),
  warn: (m: string) => emit('warn', m),
  error: (m: string) => emit('error', m),
};
