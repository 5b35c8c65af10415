import { sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';

/** Migrations are code, ordered by name; each runs once per store (kysely tracks them). */
const migrations: Record<string, Migration> = {
  '0001_audit_and_keys': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('audit_events')
        .addColumn('chain_id', 'text', (c) => c.notNull())
        .addColumn('seq', 'bigint', (c) => c.notNull())
        .addColumn('ts', 'timestamptz', (c) => c.notNull())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('session_id', 'text')
        .addColumn('subject', 'text')
        .addColumn('identity_kind', 'text')
        .addColumn('acting_for', 'text')
        .addColumn('database', 'text')
        .addColumn('decision', 'text')
        .addColumn('payload', 'text', (c) => c.notNull())
        .addColumn('prev_hash', 'text', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('audit_events_pk', ['chain_id', 'seq'])
        .execute();
      await db.schema.createIndex('audit_events_ts').on('audit_events').column('ts').execute();
      await db.schema.createIndex('audit_events_subject').on('audit_events').columns(['subject', 'ts']).execute();
      await db.schema.createIndex('audit_events_session').on('audit_events').column('session_id').execute();
      await db.schema
        .createTable('api_keys')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('subject', 'text', (c) => c.notNull())
        .addColumn('groups', 'text', (c) => c.notNull())
        .addColumn('acting_for', 'text')
        .addColumn('secret_hash', 'text', (c) => c.notNull())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .addColumn('created_by', 'text')
        .addColumn('expires_at', 'timestamptz')
        .addColumn('revoked_at', 'timestamptz')
        .addColumn('last_used_at', 'timestamptz')
        .execute();
    },
  },
  '0002_approvals': {
    async up(db: Kysely<any>) {
      // One row per request (held statement or just-in-time grant); the full record is JSON in payload, the
      // columns are what lookups filter on. version gives optimistic concurrency between gateway processes.
      await db.schema
        .createTable('approvals')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('requester', 'text', (c) => c.notNull())
        .addColumn('hash', 'text')
        .addColumn('created_at', 'timestamptz', (c) => c.notNull())
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
        .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
        .addColumn('version', 'integer', (c) => c.notNull())
        .addColumn('payload', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('approvals_status').on('approvals').columns(['status', 'kind']).execute();
      await db.schema.createIndex('approvals_requester').on('approvals').columns(['requester', 'hash']).execute();
      await db.schema.createIndex('approvals_updated').on('approvals').column('updated_at').execute();
    },
  },
  '0003_live_sessions': {
    async up(db: Kysely<any>) {
      // Each gateway process publishes its live sessions here (heartbeat), so any gateway's API shows all of them;
      // terminate_by asks the owning gateway to end one.
      await db.schema
        .createTable('live_sessions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('gateway', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
        .addColumn('terminate_by', 'text')
        .addColumn('info', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('live_sessions_gateway').on('live_sessions').column('gateway').execute();
    },
  },
  '0004_audit_heads': {
    async up(db: Kysely<any>) {
      // Where each chain stands, written with each batch of its events (and marked closed at clean shutdown):
      // `audit verify` compares it with the events, so a chain cut short at its end is reported as such.
      await db.schema
        .createTable('audit_heads')
        .addColumn('chain_id', 'text', (c) => c.primaryKey())
        .addColumn('seq', 'bigint', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .addColumn('appended', 'bigint', (c) => c.notNull())
        .addColumn('closed', 'boolean', (c) => c.notNull())
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
        .execute();
    },
  },
  '0005_compliance': {
    async up(db: Kysely<any>) {
      // Signed heads of audit chains (src/compliance/checkpoints.ts): an evidence pack proves with them, offline,
      // that no event up to a checkpoint was removed or rewritten.
      await db.schema
        .createTable('audit_checkpoints')
        .addColumn('chain_id', 'text', (c) => c.notNull())
        .addColumn('seq', 'bigint', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .addColumn('signed_at', 'timestamptz', (c) => c.notNull())
        .addColumn('key_id', 'text', (c) => c.notNull())
        .addColumn('public_key', 'text', (c) => c.notNull())
        .addColumn('signature', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('audit_checkpoints_pk', ['chain_id', 'seq'])
        .execute();
      await db.schema.createIndex('audit_checkpoints_signed').on('audit_checkpoints').column('signed_at').execute();
      // Every policy a gateway put in force: its canonical text, hash, who loaded it and when.
      await db.schema
        .createTable('policy_versions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('hash', 'text', (c) => c.notNull())
        .addColumn('loaded_at', 'timestamptz', (c) => c.notNull())
        .addColumn('loaded_by', 'text', (c) => c.notNull())
        .addColumn('text', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('policy_versions_loaded').on('policy_versions').column('loaded_at').execute();
      // Audit streams: the last event of each chain delivered to each sink, and which gateway delivers to a sink.
      await db.schema
        .createTable('stream_checkpoints')
        .addColumn('sink', 'text', (c) => c.notNull())
        .addColumn('chain_id', 'text', (c) => c.notNull())
        .addColumn('seq', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'timestamptz', (c) => c.notNull())
        .addPrimaryKeyConstraint('stream_checkpoints_pk', ['sink', 'chain_id'])
        .execute();
      await db.schema
        .createTable('stream_leases')
        .addColumn('sink', 'text', (c) => c.primaryKey())
        .addColumn('owner', 'text', (c) => c.notNull())
        .addColumn('lease_until', 'timestamptz', (c) => c.notNull())
        .execute();
      // Access reviews: a snapshot of who had access, and each reviewer's decision on each item.
      await db.schema
        .createTable('access_reviews')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('created_at', 'timestamptz', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('closed_at', 'timestamptz')
        .addColumn('items', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('access_review_decisions')
        .addColumn('review_id', 'text', (c) => c.notNull())
        .addColumn('item_id', 'text', (c) => c.notNull())
        .addColumn('decision', 'text', (c) => c.notNull())
        .addColumn('reviewer', 'text', (c) => c.notNull())
        .addColumn('reason', 'text')
        .addColumn('decided_at', 'timestamptz', (c) => c.notNull())
        .addPrimaryKeyConstraint('access_review_decisions_pk', ['review_id', 'item_id'])
        .execute();
    },
  },
};

export const migrationProvider: MigrationProvider = {
  async getMigrations() {
    return migrations;
  },
};
