// Two context-capture hooks on one producer (a Sampler's spans, a RequestTracker's requests): the
// application's, set with setContextCapture(fn), and an exporter's (the OpenTelemetry one, which
// finds the OTel span active at begin). The producer holds one hook; an exporter that finds the
// application's in force installs one that calls both and returns a ChainedContext. The producer
// gives the application's value to the result as its `context`, as without the exporter, and keeps
// the exporter's aside for it: replacing the application's hook took its context away.

/** @internal What an exporter's hook returns when it calls the application's hook too. */
export class ChainedContext {
  constructor(
    readonly app: unknown,
    readonly exporter: unknown,
  ) {}
}

// Weak: a result dropped takes its entry.
const exporterContexts = new WeakMap<object, unknown>();

/** @internal Sets a settled span's or request's `context` from what the capture hook returned. */
export function setResultContext(r: { context?: unknown }, context: unknown): void {
  if (context instanceof ChainedContext) {
    if (context.app !== undefined) r.context = context.app;
    exporterContexts.set(r, context.exporter);
  } else r.context = context;
}

/**
 * @internal What the exporter's hook returned for a result: kept aside where it called the
 * application's hook too, else the result's `context` (its hook was the only one).
 */
export function exporterContext(r: { context?: unknown }): unknown {
  return exporterContexts.has(r) ? exporterContexts.get(r) : r.context;
}
