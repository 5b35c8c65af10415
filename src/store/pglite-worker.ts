/**
 * Runs the embedded store (PGlite, PostgreSQL compiled to WASM) on its own thread: its queries execute
 * synchronously inside WASM, and on the gateway's event loop they would stall every session while audit batches
 * are written.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { PGlite } from '@electric-sql/pglite';

const port = parentPort!;
const db = await PGlite.create(workerData.path as string);
port.postMessage({ ready: true });
port.on('message', async (msg: { id: number; sql?: string; params?: unknown[]; close?: boolean }) => {
  if (msg.close) {
    await db.close();
    port.postMessage({ id: msg.id, closed: true });
    return;
  }
  try {
    const r = await db.query<Record<string, unknown>>(msg.sql!, msg.params as any[]);
    port.postMessage({ id: msg.id, rows: r.rows, affectedRows: r.affectedRows });
  } catch (e) {
    const err = e as Error & { code?: string };
    port.postMessage({ id: msg.id, error: err.message, code: err.code });
  }
});
