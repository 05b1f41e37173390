// @opentelemetry/api, an optional peer dependency (see peer.ts): opentelemetry.ts imports this
// module before it. Without it, loading jouletrace/opentelemetry failed with a bare
// MODULE_NOT_FOUND.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { JouletraceError } from './errors';
import { requirePeer } from './peer';

// What package.json's peerDependencies asks for (a test keeps the two the same).
export const OTEL_API_RANGE = '^1.7.0';

const INSTALL = `npm install @opentelemetry/api@${OTEL_API_RANGE}`;

requirePeer(
  '@opentelemetry/api',
  'ERR_JOULETRACE_OTEL_API',
  `@opentelemetry/api is not installed: jouletrace's OpenTelemetry metrics (jouletrace/opentelemetry) need @opentelemetry/api ${OTEL_API_RANGE}, an optional peer dependency of jouletrace. ` +
    `Install it beside jouletrace: ${INSTALL}, with an OpenTelemetry SDK to export what it records.`,
);

// What opentelemetry.ts calls on the API. An older one (1.2 has no metrics API) loaded, and
// registerOpenTelemetry() then failed with "Cannot read properties of undefined (reading
// 'getMeterProvider')", where npm had only warned of the unmet peer (or, with
// --legacy-peer-deps, said nothing).
const USED = ['metrics.getMeterProvider', 'createNoopMeter', 'trace.getTracer', 'trace.getActiveSpan', 'trace.setSpan', 'context.active', 'diag.warn'];

const api = require('@opentelemetry/api') as Record<string, unknown>;
const lacking = USED.filter((name) => typeof name.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown> | undefined)?.[k], api) !== 'function');
if (lacking.length) {
  const version = apiVersion();
  throw new JouletraceError(
    'ERR_JOULETRACE_OTEL_API',
    `@opentelemetry/api ${version ?? '(of unknown version)'} is too old: jouletrace's OpenTelemetry metrics (jouletrace/opentelemetry) need @opentelemetry/api ${OTEL_API_RANGE}, ` +
      `and this one lacks ${lacking.map((n) => `${n}()`).join(', ')}. Install one beside jouletrace: ${INSTALL}.`,
  );
}

/** The version in the API's package.json (not in its exports map: found above its main file). */
function apiVersion(): string | undefined {
  try {
    for (let dir = path.dirname(require.resolve('@opentelemetry/api')); ; dir = path.dirname(dir)) {
      const file = path.join(dir, 'package.json');
      if (fs.existsSync(file)) {
        const p = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
        if (p.name === '@opentelemetry/api') return typeof p.version === 'string' ? p.version : undefined;
      }
      if (path.dirname(dir) === dir) return undefined;
    }
  } catch {
    return undefined;
  }
}
