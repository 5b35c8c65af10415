import fs from 'node:fs';
import path from 'node:path';
import type { StreamConfig, StreamRecord, StreamSink } from './types.js';

/**
 * JSON lines appended to a file and synced before the batch counts as delivered. Past max_bytes the file is
 * rotated: path → path.1 → path.2 …, keeping `keep` old files.
 */
export function fileSink(cfg: StreamConfig): StreamSink {
  const file = cfg.path!;
  const maxBytes = cfg.max_bytes ?? 100 << 20;
  const keep = cfg.keep ?? 10;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const rotate = () => {
    fs.rmSync(`${file}.${keep}`, { force: true });
    for (let i = keep - 1; i >= 1; i--) if (fs.existsSync(`${file}.${i}`)) fs.renameSync(`${file}.${i}`, `${file}.${i + 1}`);
    if (keep > 0) fs.renameSync(file, `${file}.1`);
    else fs.rmSync(file, { force: true });
  };
  return {
    name: cfg.name,
    kind: 'file',
    async send(records: StreamRecord[]) {
      const data = Buffer.from(records.map((r) => JSON.stringify(r)).join('\n') + '\n', 'utf8');
      const size = fs.statSync(file, { throwIfNoEntry: false })?.size ?? 0;
      if (size > 0 && size + data.length > maxBytes) rotate();
      const fd = fs.openSync(file, 'a');
      const before = fs.fstatSync(fd).size;
      try {
        for (let done = 0; done < data.length; ) done += fs.writeSync(fd, data, done);
        fs.fdatasyncSync(fd);
      } catch (e) {
        // No torn line: the batch is written again whole.
        fs.ftruncateSync(fd, before);
        throw e;
      } finally {
        fs.closeSync(fd);
      }
    },
    async close() {},
  };
}
