// Calling users' listeners from inside jouletrace's own loops (a result poll, stop(), settle()).
// A listener that throws must not cost the listeners after it their batch, nor cut short the
// loop it was called from: its error is thrown again on its own, as an uncaught exception, as
// an EventEmitter listener's error in a timer callback would be.

interface Subscription<T> {
  readonly fn: (arg: T) => void;
  live: boolean;
}

/**
 * @internal Users' listeners (onSpan, onRequest), as EventEmitter keeps them: each subscription
 * is its own entry (one function subscribed twice is called twice, and each unsubscribe takes
 * its own entry away), a delivery goes to the subscriptions of when it began (one made during it
 * waits for the next: it was not there when the batch settled), and a subscription ended during
 * a delivery gets nothing more from it. Iterating a live Set instead visited again a listener
 * that unsubscribed and subscribed itself anew during delivery, without end.
 *
 * The array is replaced whole on subscribe and unsubscribe (rare), so that a delivery (one per
 * settled batch) walks what it found without copying it.
 */
export class ListenerList<T> {
  #subs: readonly Subscription<T>[] = [];

  get size(): number {
    return this.#subs.length;
  }

  /** Adds a subscription; returns the function that ends it (safe twice). */
  add(fn: (arg: T) => void): () => void {
    const sub: Subscription<T> = { fn, live: true };
    this.#subs = [...this.#subs, sub];
    return () => {
      if (!sub.live) return;
      sub.live = false;
      this.#subs = this.#subs.filter((s) => s !== sub);
    };
  }

  /** Calls every subscription's function with arg; a listener's error surfaces on the next tick. */
  deliver(arg: T): void {
    const subs = this.#subs;
    for (let i = 0; i < subs.length; i++) {
      const s = subs[i];
      if (!s.live) continue;
      try {
        s.fn(arg);
      } catch (e) {
        process.nextTick(rethrow, e);
      }
    }
  }
}

function rethrow(e: unknown): never {
  throw e;
}
