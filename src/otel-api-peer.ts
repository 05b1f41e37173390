// @opentelemetry/api, an optional peer dependency (see peer.ts): opentelemetry.ts imports this
// module before it. Without it, loading jouletrace/opentelemetry failed with a bare
// MODULE_NOT_FOUND.
import { requirePeer } from './peer';

// What package.json's peerDependencies asks for (a test keeps the two the same).
export const OTEL_API_RANGE = '^1.7.0';

requirePeer(
  '@opentelemetry/api',
  'ERR_JOULETRACE_OTEL_API',
  `@opentelemetry/api is not installed: jouletrace's OpenTelemetry metrics (jouletrace/opentelemetry) need @opentelemetry/api ${OTEL_API_RANGE}, an optional peer dependency of jouletrace. ` +
    `Install it beside jouletrace: npm install @opentelemetry/api@${OTEL_API_RANGE}, with an OpenTelemetry SDK to export what it records.`,
);
