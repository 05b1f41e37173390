// prom-client is an optional peer dependency: npm leaves it out unless the application has it
// (and Yarn, --legacy-peer-deps and --omit=peer always do). The two ways into the code that needs
// it, prometheus.ts and cli/serve.ts, import this module before prom-client: a missing one is then
// this error, naming what needs it and how to install it, not a bare "Cannot find module
// 'prom-client'". Nothing else may load them (the CLI loads serve only to run it).
import { JouletraceError } from './errors';

// What package.json's peerDependencies asks for (a test keeps the two the same).
export const PROM_CLIENT_RANGE = '^15.1.3';

try {
  require('prom-client');
} catch (err) {
  // Only prom-client itself missing: a module missing inside it is its own error, left as is.
  const e = err as NodeJS.ErrnoException;
  if (e?.code !== 'MODULE_NOT_FOUND' || !String(e.message).startsWith("Cannot find module 'prom-client'")) throw err;
  throw new JouletraceError(
    'ERR_JOULETRACE_PROM_CLIENT',
    `prom-client is not installed: jouletrace's Prometheus metrics (jouletrace/prometheus, jouletrace serve) need prom-client ${PROM_CLIENT_RANGE}, an optional peer dependency of jouletrace. ` +
      `Install it beside jouletrace: npm install prom-client@${PROM_CLIENT_RANGE} (npm install -g prom-client@${PROM_CLIENT_RANGE} where jouletrace is installed globally; with npx: npx -p jouletrace -p prom-client@${PROM_CLIENT_RANGE} jouletrace serve).`,
    err,
  );
}
