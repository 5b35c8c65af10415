/** The database engines (wire protocols and SQL dialects) Sluice governs. */
export type Engine = 'postgres' | 'mysql';
