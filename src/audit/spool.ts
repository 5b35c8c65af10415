import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { joinRows, rowAs, type AuditRows, type RowFormat } from './rows.js';

/**
 * The local audit spool: every event is appended here before the client sees its statement complete, and a
 * shipper moves it to the store from here. One directory per hash chain (gateway process) under the spool
 * directory, holding append-only segment files of records, one per line:
 *
 *   <crc32 of the rest, 8 hex> <seq> <ts ms> <hash> <the audit_events row>\n
 *
 * The row is in the format the store takes (see rows.ts: a COPY text line or JSON), neither of which contains a
 * raw newline, so a line is a record; a torn or altered line fails its checksum. The shipper reads the records
 * back from the files (from the page cache: they were written moments ago) and sends COPY rows as the bytes they
 * are, without parsing them. (A copy kept in memory until shipped was given up: under load it outlived the young
 * generation's collections, and its promotion to the old one cost more than reading the files back.)
 */
export interface SpoolOptions {
  dir: string;
  /** 'always': fdatasync after each write, before the client is answered; a number: the interval in ms. */
  fsync: 'always' | number;
  /** Past this many bytes on disk the log reports itself unhealthy (statements are refused). */
  maxBytes: number;
  /** A segment file is closed and a new one started past this size. */
  segmentBytes?: number;
  /** Take over the spools of gateway processes that are gone, and ship them with this one's. */
  recover?: boolean;
  /** Below this much free space on the spool's file system the log reports itself unhealthy. */
  minFreeBytes?: number;
  /** How often the owner file is touched (a live owner's heartbeat) and checked still to be ours (default 2 s). */
  heartbeatMs?: number;
  /** With recover: how often spools left by processes that are gone are looked for again (default 10 s). */
  adoptEveryMs?: number;
}

/**
 * Whose a spool directory is: its `owner` file holds the pid, the pid namespace (a pid of another namespace, say
 * another container on a shared volume, means nothing here) and a token of the process; the owner touches the file
 * every heartbeat. An owner in another namespace counts as gone once its file is this old.
 */
export const OWNER_STALE_MS = 30_000;
const PID_NS = (() => {
  try {
    return fs.readlinkSync('/proc/self/ns/pid');
  } catch {
    return '';
  }
})();
const TOKEN = crypto.randomBytes(8).toString('hex');
const ownerText = () => `${process.pid}\n${PID_NS}\n${TOKEN}\n`;

interface Segment {
  file: string;
  /** Bytes of complete records in the file (written by this process, or found when taken over). */
  bytes: number;
}

/** Chains whose spool a live AuditLog of this process writes (an in-process restart must not take them over). */
const LIVE = new Set<string>();

const SEG_RE = /^\d{12}\.seg$/;
const segName = (firstSeq: number) => `${String(firstSeq).padStart(12, '0')}.seg`;
const NL = 0x0a;
const SLAB_BYTES = 256 * 1024;
const HEX = Buffer.from('0123456789abcdef', 'latin1');

/** One chain's records on disk, in order, and how far they have been shipped. */
export class SpoolSource {
  segments: Segment[] = [];
  /** Read position in segments[0]. */
  offset = 0;
  /** Records on disk not yet shipped. */
  remaining = 0;
  /** Time of the oldest record not yet shipped, when known. */
  oldestTs?: number;
  constructor(
    readonly chainId: string,
    readonly dir: string,
    readonly own: boolean,
  ) {}
}

export interface SpoolBatch {
  source: SpoolSource;
  rows: AuditRows;
  count: number;
  /** Lines consumed, including ones skipped as damaged. */
  lines: number;
  lastSeq: number;
  lastHash: string;
  lastTs: number;
  /** Where reading stopped: segment index and offset in it. */
  endSegment: number;
  endOffset: number;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function countLines(file: string): { lines: number; bytes: number } {
  const buf = fs.readFileSync(file);
  let lines = 0;
  let last = -1;
  for (let i = buf.indexOf(NL); i >= 0; i = buf.indexOf(NL, i + 1)) {
    lines++;
    last = i;
  }
  // A torn last record (no newline: the process died mid-write, which was never acknowledged) is not counted.
  return { lines, bytes: last + 1 };
}

export class Spool {
  readonly own: SpoolSource;
  /** Chains taken over from gateway processes that are gone, shipped before this one's. */
  readonly adopted: SpoolSource[] = [];
  private fd = -1;
  /**
   * Queued lines, encoded once into this buffer up to slabEnd (their CRCs are computed over these bytes, and they
   * are what is written); reused from its start once they are written.
   */
  private slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
  private slabEnd = 0;
  private pendingLines = 0;
  private pendingFirstSeq = 0;
  private dirty = false;
  private syncing = false;
  private timer?: NodeJS.Timeout;
  private totalBytes = 0;
  private lowDisk = false;
  private readonly segmentBytes: number;
  /** The last write failure (disk full, I/O error); cleared by the next successful write. */
  error?: Error;
  /** Records skipped on reading because they were damaged. */
  damaged = 0;
  /** Records the shipper read back from the files. */
  readBack = 0;
  /** This chain's directory was moved away by another process (it took it for a dead one's): fail closed. */
  private lost = false;
  private heartbeatTimer?: NodeJS.Timeout;
  private beats = 0;
  /** Called when spools of processes gone meanwhile were taken over (the log ships them). */
  onAdopted?: () => void;

  constructor(
    chainId: string,
    readonly opts: SpoolOptions,
    private readonly onProblem: (msg: string) => void = () => {},
  ) {
    this.segmentBytes = opts.segmentBytes ?? Math.max(64 * 1024, Math.min(8 << 20, Math.floor(opts.maxBytes / 8)));
    fs.mkdirSync(opts.dir, { recursive: true });
    const dir = path.join(opts.dir, chainId);
    if (opts.recover) this.takeOver(dir);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'owner'), ownerText());
    LIVE.add(chainId);
    this.own = new SpoolSource(chainId, dir, true);
    const adopted = path.join(dir, 'adopted');
    if (opts.recover && fs.existsSync(adopted)) this.loadAdopted(fs.readdirSync(adopted).map((n) => path.join(adopted, n)));
    this.checkDisk();
    this.heartbeatTimer = setInterval(() => this.heartbeat(), opts.heartbeatMs ?? 2000);
    this.heartbeatTimer.unref();
    this.timer = setInterval(() => this.tick(), opts.fsync === 'always' ? 1000 : opts.fsync);
    this.timer.unref();
  }

  /**
   * Move the spools of processes that are gone under our own directory (rename: exactly one taker wins); the
   * directories moved.
   */
  private takeOver(ownDir: string): string[] {
    const target = path.join(ownDir, 'adopted');
    const moved: string[] = [];
    for (const name of fs.readdirSync(this.opts.dir)) {
      const dir = path.join(this.opts.dir, name);
      if (dir === ownDir || !fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) continue;
      // `<pid>\n<pid namespace>\n<token>\n` (see ownerText; an earlier version wrote the pid only).
      let owner = ['', '', ''];
      let age = Infinity;
      try {
        const file = path.join(dir, 'owner');
        owner = fs.readFileSync(file, 'utf8').split('\n');
        age = Date.now() - fs.statSync(file).mtimeMs;
      } catch {
        /* no owner file: an interrupted start; take it */
      }
      const pid = Number(owner[0]?.trim() ?? 0);
      const ns = owner[1]?.trim() ?? '';
      const token = owner[2]?.trim() ?? '';
      const gone =
        ns && ns !== PID_NS
          ? age > OWNER_STALE_MS // another pid namespace: only its heartbeat tells
          : pid === process.pid
            ? (token !== '' && token !== TOKEN) || !LIVE.has(name) // our pid: an earlier process's, or a log of ours closed
            : !(pid > 0 && pidAlive(pid));
      if (!gone) continue;
      try {
        fs.mkdirSync(target, { recursive: true });
        fs.renameSync(dir, path.join(target, name));
        moved.push(path.join(target, name));
        this.onProblem(`taking over the audit spool of ${name} (process ${pid || 'unknown'} is gone): its events are shipped first`);
      } catch (e) {
        // ENOENT: another process took it first. Anything else (another user's directory): leave it, say so.
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.onProblem(`cannot take over the audit spool ${dir}: ${(e as Error).message}`);
      }
    }
    return moved;
  }

  /**
   * Every heartbeat: touch the owner file, which also tells that this chain's directory is still where it was (a
   * process that took it for a dead one's and moved it would ship and delete what this one goes on writing: the
   * log fails closed instead). With recover, now and then: take over spools whose processes have gone meanwhile.
   */
  private heartbeat(): void {
    if (this.lost) return;
    try {
      const now = new Date();
      fs.utimesSync(path.join(this.own.dir, 'owner'), now, now);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' && LIVE.has(this.own.chainId)) this.loseDirectory();
      return;
    }
    if (!this.opts.recover || ++this.beats * (this.opts.heartbeatMs ?? 2000) < (this.opts.adoptEveryMs ?? 10_000)) return;
    this.beats = 0;
    try {
      const moved = this.takeOver(this.own.dir);
      if (moved.length) {
        this.loadAdopted(moved);
        this.onAdopted?.();
      }
    } catch (e) {
      this.onProblem(`cannot look for audit spools to take over: ${(e as Error).message}`);
    }
  }

  private loseDirectory(): void {
    if (this.lost) return;
    this.lost = true;
    this.onProblem(`the audit spool directory ${this.own.dir} was moved away by another process: statements are refused until this gateway restarts`);
  }

  /** Adopted chains (and the ones they had adopted themselves), flattened into sources. */
  private loadAdopted(dirs: string[]): void {
    const stack = [...dirs];
    while (stack.length) {
      const dir = stack.pop()!;
      const nested = path.join(dir, 'adopted');
      if (fs.existsSync(nested)) for (const n of fs.readdirSync(nested)) stack.push(path.join(nested, n));
      const src = new SpoolSource(path.basename(dir), dir, false);
      try {
        for (const f of fs.readdirSync(dir).filter((n) => SEG_RE.test(n)).sort()) {
          const c = countLines(path.join(dir, f));
          src.segments.push({ file: path.join(dir, f), bytes: c.bytes });
          src.remaining += c.lines;
        }
      } catch (e) {
        this.onProblem(`cannot read the audit spool ${dir}: ${(e as Error).message}`);
        continue;
      }
      for (const seg of src.segments) this.totalBytes += seg.bytes;
      if (src.segments.length) this.adopted.push(src);
      else fs.rm(dir, { recursive: true, force: true }, () => {});
    }
    this.adopted.sort((a, b) => a.chainId.localeCompare(b.chainId));
  }

  /** Queue one record; it reaches the file at the next flush (same event-loop turn, before any reply). */
  add(seq: number, ts: number, hash: string, row: string): void {
    const line = `00000000 ${seq} ${ts} ${hash} ${row}\n`;
    if (this.pendingLines === 0) this.pendingFirstSeq = seq;
    // Room for the line at its longest (3 bytes of UTF-8 per UTF-16 unit); the queued lines move to a larger buffer
    // when it would not fit.
    const room = line.length * 3;
    if (this.slabEnd + room > this.slab.length) {
      const next = Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, 2 * (this.slabEnd + room)));
      this.slab.copy(next, 0, 0, this.slabEnd);
      this.slab = next;
    }
    // `<crc> <body>\n`: the CRC of the body's own bytes, as 8 hex digits, over the zeros it was written with.
    const at = this.slabEnd;
    const n = this.slab.write(line, at, 'utf8');
    const crc = zlib.crc32(this.slab.subarray(at + 9, at + n - 1));
    for (let i = 0; i < 8; i++) this.slab[at + i] = HEX[(crc >>> (28 - 4 * i)) & 15]!;
    this.slabEnd = at + n;
    this.pendingLines++;
    if (this.own.remaining === 0 && this.own.oldestTs === undefined) this.own.oldestTs = ts;
  }

  /** Records queued but not yet written. */
  get buffered(): number {
    return this.pendingLines;
  }

  /** Bytes of spool files on disk (all chains). */
  get bytes(): number {
    return this.totalBytes;
  }

  /** Records written and not yet shipped, all chains. */
  get unshipped(): number {
    let n = this.own.remaining;
    for (const a of this.adopted) n += a.remaining;
    return n;
  }

  get oldestTs(): number | undefined {
    let t: number | undefined;
    for (const s of [...this.adopted, this.own]) if (s.remaining > 0 && s.oldestTs !== undefined && (t === undefined || s.oldestTs < t)) t = s.oldestTs;
    return t;
  }

  /** True while records can be made durable and the spool is within its bound. */
  get ok(): boolean {
    return !this.error && !this.lost && !this.lowDisk && this.totalBytes <= this.opts.maxBytes;
  }

  get problem(): string | undefined {
    if (this.lost) return `the audit spool directory ${this.own.dir} was moved away by another process (restart this gateway)`;
    if (this.error) return `cannot write the audit spool: ${this.error.message}`;
    if (this.lowDisk) return `less than ${this.opts.minFreeBytes ?? 16 << 20} bytes free for the audit spool in ${this.opts.dir}`;
    if (this.totalBytes > this.opts.maxBytes) return `the audit spool holds ${this.totalBytes} bytes, past its bound of ${this.opts.maxBytes} (audit.spool_max_bytes)`;
    return undefined;
  }

  /**
   * Write what is queued with one system call (plus fdatasync with fsync: always). Returns false when it could
   * not be written: the records stay queued (retried at the next flush) and the caller must not acknowledge.
   */
  flush(): boolean {
    if (this.pendingLines === 0) return true;
    if (this.lost) return false;
    const data = this.slab.subarray(0, this.slabEnd);
    const lines = this.pendingLines;
    try {
      let seg = this.own.segments[this.own.segments.length - 1];
      if (this.fd < 0 || !seg || seg.bytes >= this.segmentBytes) seg = this.rotate();
      let done = 0;
      try {
        while (done < data.length) done += fs.writeSync(this.fd, data, done, data.length - done, seg.bytes + done);
      } catch (e) {
        // Leave no partial record behind: the next write starts on a record boundary.
        if (done > 0) fs.ftruncateSync(this.fd, seg.bytes);
        throw e;
      }
      if (this.opts.fsync === 'always') fs.fdatasyncSync(this.fd);
      else this.dirty = true;
      seg.bytes += data.length;
      this.totalBytes += data.length;
      this.own.remaining += lines;
      // Written (the system call copied them): the buffer is free again; one grown far past its size is let go.
      this.pendingLines = 0;
      this.slabEnd = 0;
      if (this.slab.length > 16 * SLAB_BYTES) this.slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
      if (this.error) this.onProblem('the audit spool is writable again');
      this.error = undefined;
      // Still where this process put it (one stat): a directory moved away since (another process took it for a
      // dead one's) may have been counted and shipped without these records, so they are not acknowledged. Checked
      // after the write: present now, the records were in it before any move, and whoever moves it ships them.
      if (!fs.existsSync(seg.file)) {
        this.loseDirectory();
        return false;
      }
      return true;
    } catch (e) {
      if (!this.error) this.onProblem(`cannot write the audit spool in ${this.own.dir}: ${(e as Error).message}`);
      this.error = e as Error;
      return false;
    }
  }

  private rotate(): Segment {
    const always = this.opts.fsync === 'always';
    if (this.fd >= 0) {
      // The finished segment is synced off the event loop (with fsync: always it already is).
      const old = this.fd;
      this.fd = -1;
      if (always) fs.closeSync(old);
      else fs.fdatasync(old, () => fs.close(old, () => {}));
    }
    if (!fs.existsSync(this.own.dir)) {
      // Written after close (a late event at shutdown): the directory is made again and the next start ships it.
      fs.mkdirSync(this.own.dir, { recursive: true });
      fs.writeFileSync(path.join(this.own.dir, 'owner'), `${process.pid}\n`);
    }
    const seg: Segment = { file: path.join(this.own.dir, segName(this.pendingFirstSeq)), bytes: 0 };
    this.fd = fs.openSync(seg.file, 'w');
    // The new file's directory entry must survive a power loss too: before the next reply with fsync: always,
    // else within the fsync interval like the records.
    if (always) {
      const dfd = fs.openSync(this.own.dir, 'r');
      try {
        fs.fsyncSync(dfd);
      } finally {
        fs.closeSync(dfd);
      }
    } else fs.open(this.own.dir, 'r', (e, dfd) => !e && fs.fsync(dfd, () => fs.close(dfd, () => {})));
    this.own.segments.push(seg);
    return seg;
  }

  private tick(): void {
    // After a failed write (disk full), retry even when nothing new arrives: recovery ends the fail-closed state.
    if (this.error && this.pendingLines) this.flush();
    if (this.dirty && !this.syncing && this.fd >= 0) {
      this.dirty = false;
      this.syncing = true;
      fs.fdatasync(this.fd, () => (this.syncing = false));
    }
    this.checkDisk();
  }

  private checkDisk(): void {
    try {
      const s = fs.statfsSync(this.opts.dir);
      const low = s.bavail * s.bsize < (this.opts.minFreeBytes ?? 16 << 20);
      if (low !== this.lowDisk) this.onProblem(low ? `the file system of the audit spool (${this.opts.dir}) is almost full` : 'the audit spool has room again');
      this.lowDisk = low;
    } catch {
      /* statfs unavailable: disk-full still shows as a write error */
    }
  }

  /** The next source with records to ship: chains taken over first, then this process's own. */
  next(): SpoolSource | undefined {
    return this.adopted.find((a) => a.remaining > 0) ?? (this.own.remaining > 0 ? this.own : undefined);
  }

  /** Up to maxRows records (about maxBytes) of a source in the given row format, without consuming them. */
  read(src: SpoolSource, maxRows: number, maxBytes: number, format: RowFormat = 'json'): SpoolBatch {
    // COPY rows go as the bytes they are (each with its newline); rows of the other format are converted.
    const parts: (Buffer | string)[] = [];
    let firstSeq = 0;
    let count = 0;
    let lines = 0;
    let lastSeq = 0;
    let lastHash = '';
    let lastTs = 0;
    let segIdx = 0;
    let offset = src.offset;
    let budget = maxBytes;
    while (segIdx < src.segments.length && count < maxRows && budget > 0) {
      const seg = src.segments[segIdx]!;
      const len = Math.min(seg.bytes - offset, budget);
      if (len <= 0) {
        if (segIdx === src.segments.length - 1) break;
        segIdx++;
        offset = 0;
        continue;
      }
      let buf = Buffer.allocUnsafe(len);
      const fd = fs.openSync(seg.file, 'r');
      try {
        let got = 0;
        while (got < len) {
          const n = fs.readSync(fd, buf, got, len - got, offset + got);
          if (n === 0) break;
          got += n;
        }
        // A file shorter than what was written to it (cut by something else): only the bytes read are looked at.
        if (got < len) {
          buf = buf.subarray(0, got);
          this.onProblem(`the audit spool file ${seg.file} is shorter than what was written to it (${offset + got} of ${seg.bytes} bytes)`);
        }
      } finally {
        fs.closeSync(fd);
      }
      let pos = 0;
      for (let nl = buf.indexOf(NL); nl >= 0 && count < maxRows; nl = buf.indexOf(NL, pos)) {
        // Every record's checksum is checked, this process's own too: the file may have been changed under it.
        const rec = this.parse(buf, pos, nl, true);
        lines++;
        const row = rec && (format === 'copy' && buf[rec.jsonStart] !== 0x7b ? buf.subarray(rec.jsonStart, nl + 1) : rowAs(buf.toString('utf8', rec.jsonStart, nl), format));
        if (rec && row !== undefined) {
          if (count === 0 && src.oldestTs === undefined) src.oldestTs = rec.ts;
          if (count === 0) firstSeq = rec.seq;
          parts.push(row);
          this.readBack++;
          count++;
          lastSeq = rec.seq;
          lastHash = rec.hash;
          lastTs = rec.ts;
        } else {
          this.damaged++;
          this.onProblem(`damaged record skipped in ${seg.file} at byte ${offset + pos}`);
        }
        pos = nl + 1;
      }
      if (pos === 0) {
        // Not even one whole record within the budget: read this record in full.
        if (len < seg.bytes - offset) {
          budget = seg.bytes - offset;
          continue;
        }
        break;
      }
      offset += pos;
      budget -= pos;
      if (pos < len) break; // the row limit or the byte budget ended the batch inside this read
      if (offset >= seg.bytes) {
        if (segIdx === src.segments.length - 1) break;
        segIdx++;
        offset = 0;
      }
    }
    const rows: AuditRows =
      format === 'copy' && parts.every((p) => typeof p !== 'string')
        ? { format, text: Buffer.concat(parts as Buffer[]), count, firstSeq }
        : joinRows(parts.map((p) => (typeof p === 'string' ? p : p.toString('utf8', 0, p.length - 1))), format, firstSeq);
    return { source: src, rows, count, lines, lastSeq, lastHash, lastTs, endSegment: segIdx, endOffset: offset };
  }

  private parse(buf: Buffer, start: number, end: number, check: boolean): { seq: number; ts: number; hash: string; jsonStart: number } | undefined {
    if (end - start < 12 || buf[start + 8] !== 0x20) return undefined;
    if (check && zlib.crc32(buf.subarray(start + 9, end)) !== parseInt(buf.toString('latin1', start, start + 8), 16)) return undefined;
    const s1 = buf.indexOf(0x20, start + 9);
    const s2 = s1 < 0 ? -1 : buf.indexOf(0x20, s1 + 1);
    const s3 = s2 < 0 ? -1 : buf.indexOf(0x20, s2 + 1);
    if (s3 < 0 || s3 >= end) return undefined;
    return { seq: Number(buf.toString('latin1', start + 9, s1)), ts: Number(buf.toString('latin1', s1 + 1, s2)), hash: buf.toString('latin1', s2 + 1, s3), jsonStart: s3 + 1 };
  }

  /** The batch is in the store: move past it, deleting segment files nothing refers to any more. */
  commit(b: SpoolBatch): void {
    const src = b.source;
    for (let i = 0; i < b.endSegment; i++) this.dropSegment(src);
    src.offset = b.endOffset;
    src.remaining -= b.lines;
    // The next record is no older than the last one shipped.
    src.oldestTs = src.remaining > 0 ? b.lastTs : undefined;
    const last = src.segments[0];
    if (!src.own && last && src.offset >= last.bytes && src.segments.length === 1) this.dropSegment(src);
    if (!src.own && src.segments.length === 0) {
      fs.rmSync(src.dir, { recursive: true, force: true });
      this.adopted.splice(this.adopted.indexOf(src), 1);
    }
  }

  private dropSegment(src: SpoolSource): void {
    const seg = src.segments.shift()!;
    fs.rm(seg.file, { force: true }, () => {});
    this.totalBytes -= seg.bytes;
    src.offset = 0;
  }

  /** fdatasync now (clean shutdown). */
  sync(): void {
    if (this.fd >= 0) fs.fdatasyncSync(this.fd);
    this.dirty = false;
  }

  /** Stop; with nothing left to ship, the chain's directory is removed, else it stays for the next start. */
  close(): boolean {
    clearInterval(this.timer);
    clearInterval(this.heartbeatTimer);
    this.flush();
    if (this.fd >= 0) {
      fs.fdatasyncSync(this.fd);
      fs.closeSync(this.fd);
      this.fd = -1;
    }
    LIVE.delete(this.own.chainId);
    const empty = this.pendingLines === 0 && this.unshipped === 0;
    if (empty) {
      fs.rmSync(this.own.dir, { recursive: true, force: true });
      this.own.segments = [];
      this.own.offset = 0;
      this.totalBytes = 0;
    }
    return empty;
  }
}

