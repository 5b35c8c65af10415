import type { AnalysisResult } from '../../analyze/analyze.js';
import { RoutineCatalog, routineFacts } from '../../analyze/mysql-routines.js';
import { MyClient } from './client.js';
import type { MyUpstreamTarget } from './upstream.js';

/**
 * The MySQL server's stored routines and views, read with the gateway's own credentials (see
 * analyze/mysql-routines.ts for how they are judged). Every schema's: calls reach other schemas (`db.f()`).
 */
export function mysqlRoutineCatalog(target: MyUpstreamTarget, analyze: (sql: string) => AnalysisResult): RoutineCatalog {
  return new RoutineCatalog(async () => {
    const c = await MyClient.connect(target);
    try {
      const r = await c.query('SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE, SQL_DATA_ACCESS, ROUTINE_DEFINITION, SQL_MODE, CHARACTER_SET_CLIENT FROM information_schema.ROUTINES');
      const p = await c.query('SELECT SPECIFIC_SCHEMA, SPECIFIC_NAME, PARAMETER_NAME FROM information_schema.PARAMETERS WHERE PARAMETER_NAME IS NOT NULL');
      const v = await c.query('SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS');
      return routineFacts(
        r.rows.map(([schema, name, type, access, definition, sqlMode, charset]) => ({ schema: schema ?? '', name: name ?? '', type: type ?? '', access, definition, sqlMode, charset })),
        p.rows.map(([schema, name, parameter]) => ({ schema: schema ?? '', name: name ?? '', parameter: parameter ?? '' })),
        v.rows.map(([schema, name, definition]) => ({ schema: schema ?? '', name: name ?? '', definition })),
        analyze,
      );
    } finally {
      c.close();
    }
  });
}
