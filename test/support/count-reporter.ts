import type { Reporter, TestModule } from 'vitest/node';

/** Prints the closing line CI reads: `tests: N passed, N failed` (a file that fails to load counts as failed). */
export default class CountReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>, unhandledErrors: ReadonlyArray<unknown> = []): void {
    let passed = 0;
    // An unhandled error fails the run in vitest; count it so this line never reads clean when the run is not.
    let failed = unhandledErrors.length;
    let skipped = 0;
    for (const m of modules) {
      const tests = [...m.children.allTests()];
      if (tests.length === 0 && m.state() === 'failed') failed++;
      for (const t of tests) {
        const s = t.result().state;
        if (s === 'passed') passed++;
        else if (s === 'failed') failed++;
        else skipped++;
      }
      if (tests.length > 0 && m.state() === 'failed' && tests.every((t) => t.result().state !== 'failed')) failed++;
    }
    process.stdout.write(`\ntests: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
  }
}
