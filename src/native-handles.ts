// The native handle (or shared buffer) behind each public object, for bench/ and tests only:
// never exported from the package entry point.

const handles = new WeakMap<object, unknown>();

export function registerHandle(owner: object, handle: unknown): void {
  handles.set(owner, handle);
}

/** The native handle (or shared buffer) behind a public object: benchmarks fill rings through it, tests read span rings. */
export function nativeHandleOf<T = unknown>(owner: object): T {
  const h = handles.get(owner);
  if (!h) throw new Error('no native handle registered for this object');
  return h as T;
}
