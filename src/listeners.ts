// Calling users' listeners from inside jouletrace's own loops (a result poll, stop(), settle()).
// A listener that throws must not cost the listeners after it their batch, nor cut short the
// loop it was called from: its error is thrown again on its own, as an uncaught exception, as
// an EventEmitter listener's error in a timer callback would be.

/** Calls every listener with arg; a listener's error surfaces on the next tick. */
export function callListeners<T>(listeners: Iterable<(arg: T) => void>, arg: T): void {
  for (const l of listeners) {
    try {
      l(arg);
    } catch (e) {
      process.nextTick(rethrow, e);
    }
  }
}

function rethrow(e: unknown): never {
  throw e;
}
