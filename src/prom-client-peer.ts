// prom-client, an optional peer dependency (see peer.ts). The two ways into the code that needs
// it, prometheus.ts and cli/serve.ts, import this module before prom-client (serve once its
// command line is parsed). Nothing else may load prometheus.ts.
import { requirePeer } from './peer';

// What package.json's peerDependencies asks for (a test keeps the two the same).
export const PROM_CLIENT_RANGE = '^15.1.3';

requirePeer(
  'prom-client',
  'ERR_JOULETRACE_PROM_CLIENT',
  `prom-client is not installed: jouletrace's Prometheus metrics (jouletrace/prometheus, jouletrace serve) need prom-client ${PROM_CLIENT_RANGE}, an optional peer dependency of jouletrace. ` +
    `Install it beside jouletrace: npm install prom-client@${PROM_CLIENT_RANGE} (npm install -g prom-client@${PROM_CLIENT_RANGE} where jouletrace is installed globally; with npx: npx -p jouletrace -p prom-client@${PROM_CLIENT_RANGE} jouletrace serve).`,
);
