// Option validation shared by every public entry point. One message template, as users of
// better-sqlite3 and sharp know it: "Expected <what> for <option> but received <value> of type <type>".

// A value inside an object that JSON cannot write, marked to be written as JavaScript would (a
// private-use character that JSON.stringify leaves as it is).
const MARK = '\uE000';
const AS_WRITTEN = new RegExp(`"${MARK}([^"${MARK}]*)${MARK}"`, 'g');
function asWritten(_key: string, v: unknown): unknown {
  if ((typeof v === 'number' && !Number.isFinite(v)) || v === undefined) return `${MARK}${String(v)}${MARK}`;
  if (typeof v === 'bigint') return `${MARK}${v}n${MARK}`;
  return v;
}

export function describe(value: unknown): string {
  if (value === null) return 'null of type null';
  const type = Array.isArray(value) ? 'array' : typeof value;
  let shown: string;
  if (typeof value === 'string') shown = JSON.stringify(value);
  else if (typeof value === 'bigint') shown = `${value}n`;
  else if (typeof value === 'function') shown = value.name ? `[function ${value.name}]` : '[function]';
  else if (typeof value === 'object') {
    try {
      // JSON writes Infinity and NaN as null and undefined as null or nothing, and throws on a
      // bigint: the very values a message must show ([1,Infinity] is refused for its Infinity).
      shown = (JSON.stringify(value, asWritten) ?? String(value)).replace(AS_WRITTEN, '$1');
    } catch {
      shown = Object.prototype.toString.call(value);
    }
    if (shown.length > 60) shown = shown.slice(0, 57) + '...';
  } else shown = String(value);
  return `${shown} of type ${type}`;
}

export function invalidType(option: string, expected: string, value: unknown): TypeError {
  return new TypeError(`Expected ${expected} for ${option} but received ${describe(value)}`);
}

export function invalidRange(option: string, expected: string, value: unknown): RangeError {
  return new RangeError(`Expected ${expected} for ${option} but received ${describe(value)}`);
}

/**
 * A Sampler, of this copy of jouletrace or of another (by shape: its domains and the methods every
 * reader of its figures calls, and `also` those the caller calls besides, so that a look-alike
 * fails here rather than at its first run end or settled span); else a TypeError naming the option.
 */
export function checkSampler<T>(option: string, value: T, also: readonly string[] = []): T {
  const s = value as Record<string, unknown> | null;
  if (s === null || typeof s !== 'object' || !Array.isArray(s.domains) || [...SAMPLER_METHODS, ...also].some((m) => typeof s[m] !== 'function')) {
    throw invalidType(option, 'a Sampler', value);
  }
  return value;
}
const SAMPLER_METHODS = ['totals', 'stats', 'onRunEnd'];

/** An Error with a machine-readable `code`, as Node's own errors carry. */
export class JouletraceError extends Error {
  readonly code: string;
  constructor(code: string, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'JouletraceError';
    this.code = code;
  }
}

/**
 * A native call's coded Error as the JouletraceError every entry point throws for it (native code
 * throws plain Errors with a code).
 */
export function asJouletraceError(e: unknown): Error {
  // A bad option stays what it is everywhere else, a TypeError or RangeError, code and all.
  if (e instanceof TypeError || e instanceof RangeError) return e;
  if (e instanceof Error && typeof (e as { code?: unknown }).code === 'string' && !(e instanceof JouletraceError)) {
    return new JouletraceError((e as unknown as { code: string }).code, e.message);
  }
  return e instanceof Error ? e : new Error(String(e));
}

export function checkObject(option: string, value: unknown): Record<string, unknown> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalidType(option, 'an object', value);
  }
  return value as Record<string, unknown>;
}

export function checkKnownKeys(option: string, obj: Record<string, unknown>, known: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (!known.includes(key)) {
      throw new TypeError(`Unknown option ${option}.${key}; known options are: ${known.join(', ')}`);
    }
  }
}

export function checkString(option: string, value: unknown): string {
  if (typeof value !== 'string') throw invalidType(option, 'a string', value);
  return value;
}

export function checkOneOf<T extends string>(option: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    const list = allowed.map((a) => `'${a}'`).join(', ');
    if (typeof value !== 'string') throw invalidType(option, `one of ${list}`, value);
    throw invalidRange(option, `one of ${list}`, value);
  }
  return value as T;
}

/**
 * An object offering `methods`, checked by shape (an application's own copy of a library, or a
 * wrapper, passes): a wrong value fails here, naming the option, not later in a call far off.
 */
export function checkMethods<T>(option: string, value: unknown, what: string, methods: readonly string[], hint?: string): T {
  if (value === null || typeof value !== 'object' || methods.some((m) => typeof (value as Record<string, unknown>)[m] !== 'function')) {
    const err = invalidType(option, `${what} (an object with ${methods.map((m) => `${m}()`).join(', ')})`, value);
    if (hint) err.message += `; ${hint}`;
    throw err;
  }
  return value as T;
}

export function checkBoolean(option: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw invalidType(option, 'a boolean', value);
  return value;
}

export function checkNumberInRange(option: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || Number.isNaN(value)) throw invalidType(option, `a number between ${min} and ${max}`, value);
  if (!(value >= min && value <= max)) throw invalidRange(option, `a number between ${min} and ${max}`, value);
  return value;
}

export function checkIntegerInRange(option: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || Number.isNaN(value)) throw invalidType(option, `an integer between ${min} and ${max}`, value);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalidRange(option, `an integer between ${min} and ${max}`, value);
  }
  return value;
}

/**
 * A path handed to native code: a non-empty string without NUL (which would cut it short there),
 * returned without repeated slashes, '.' segments or a trailing slash, so that native code knows
 * the default path however it is written ('/proc/' must take /proc's hidepid advice).
 */
// Linux's PATH_MAX, in bytes with its terminating NUL: a longer path reaches no file (ENAMETOOLONG).
const PATH_MAX = 4096;

export function checkPath(option: string, value: unknown): string {
  if (typeof value !== 'string') throw invalidType(option, 'a non-empty path string', value);
  if (value.length === 0 || value.includes('\0')) throw invalidRange(option, 'a non-empty path string', value);
  // Bytes, not characters: the kernel counts the UTF-8. Shown cut short: a megabyte-long path
  // made a megabyte-long message.
  if (value.length >= PATH_MAX / 3 && Buffer.byteLength(value) >= PATH_MAX) {
    throw new RangeError(
      `Expected a path of at most ${PATH_MAX - 1} bytes (Linux's PATH_MAX) for ${option} but received one of ${Buffer.byteLength(value)} bytes starting ${JSON.stringify(value.slice(0, 60))}`,
    );
  }
  // Not path.posix.normalize: '..' after a symlink leads elsewhere than its lexical removal.
  const segments = value.split('/').filter((s) => s !== '' && s !== '.');
  const spelled = (value.startsWith('/') ? '/' : '') + segments.join('/');
  return spelled === '' ? '.' : spelled;
}
