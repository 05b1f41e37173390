// Joules → grams of CO2-equivalent, from a grid carbon intensity in gCO2e/kWh.
//
// Three ways to say what the grid emits:
//   { country: 'FRA' }        yearly average by ISO 3166-1 alpha-3 code (or a region such as
//                             'WORLD', 'EU'), from the Ember data that @tgwf/co2 ships (offline)
//   { gramsPerKwh: 380 }      a fixed figure
//   { provider: async () => n, ttlMs }   a live provider (e.g. an Electricity Maps client),
//                             called at most once per ttlMs, its last good answer cached
// Every figure is bounded to 0..MAX_GRAMS_PER_KWH, as the CLI's --grams-per-kwh is.
import { checkIntegerInRange, checkKnownKeys, checkNumberInRange, invalidRange, invalidType } from './errors';

/** Joules in one kilowatt-hour. */
export const JOULES_PER_KWH = 3.6e6;
/**
 * The highest grid intensity taken, gCO2e/kWh: ten times the dirtiest grid (lignite, ~1,100 g).
 * Unbounded, a finite but absurd figure (1e308) made grams Infinity, which a Prometheus counter
 * refuses at every scrape after, failing the whole registry.
 */
export const MAX_GRAMS_PER_KWH = 1e5;
const RETRY_AFTER_FAILURE_MS = 60_000;
// get()/within()'s `now` past this (31 years of uptime) is a Date.now() reading (1.7e12), the
// clock they took before: taken, it put the last refresh decades ahead of performance.now(), and
// calls on the default clock never refreshed again.
const MAX_MONOTONIC_MS = 1e12;
// Scrapes wait for get(): a provider that never answers (a fetch with no timeout) must not hang them.
const PROVIDER_TIMEOUT_MS = 10_000;
// The longest wait setTimeout() takes; past it, it waits 1 ms with a TimeoutOverflowWarning.
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
// The ways to know the intensity, one of which CarbonIntensity takes.
const WAYS = ['country', 'gramsPerKwh', 'provider'] as const;

/** Grams of CO2e emitted by `joules` of electricity on a grid emitting `gramsPerKwh`. */
export function joulesToGrams(joules: number, gramsPerKwh: number): number {
  return (checkJoules('joules', joules) / JOULES_PER_KWH) * checkIntensity('gramsPerKwh', gramsPerKwh);
}

// NaN or a negative figure in, NaN or negative grams out: a wrong total, without a word.
function checkAmount(name: string, value: unknown, unit: string): number {
  const what = `a finite number of ${unit}, 0 or more`;
  if (typeof value !== 'number' || Number.isNaN(value)) throw invalidType(name, what, value);
  if (!Number.isFinite(value) || value < 0) throw invalidRange(name, what, value);
  return value;
}

const checkJoules = (name: string, value: unknown) => checkAmount(name, value, 'joules');
function checkIntensity(name: string, value: unknown): number {
  const what = `a number of gCO2e/kWh from 0 to ${MAX_GRAMS_PER_KWH}`;
  if (typeof value !== 'number' || Number.isNaN(value)) throw invalidType(name, what, value);
  if (!(value >= 0 && value <= MAX_GRAMS_PER_KWH)) throw invalidRange(name, what, value);
  return value;
}

export type IntensityProvider = () => number | Promise<number>;

export type CarbonIntensityOptions =
  | { country: string }
  | { gramsPerKwh: number }
  | {
      provider: IntensityProvider;
      /** How long an answer stays fresh, in ms (default 15 minutes). */
      ttlMs?: number;
      /**
       * Used until the provider has answered once, and never again after (its last answer is
       * kept when it fails). Default: none.
       */
      fallbackGramsPerKwh?: number;
    };

interface AverageIntensityData {
  data: Record<string, number>;
  type?: string;
}

let averageCache: AverageIntensityData | undefined;

function averageIntensity(): AverageIntensityData {
  if (!averageCache) {
    // CommonJS entry of @tgwf/co2: { averageIntensity: { data: { FRA: 44.18, ... }, type: 'average' } }
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const co2 = require('@tgwf/co2') as { averageIntensity: AverageIntensityData };
    averageCache = co2.averageIntensity;
  }
  return averageCache;
}

/** The yearly average grid intensity (gCO2e/kWh) of a country or region, from @tgwf/co2 (Ember data). */
export function gridIntensity(country: string): number {
  return countryIntensity(country, 'country', 'use a figure of your own in its place (carbon: { gramsPerKwh })');
}

// `instead`: what an error says to give for a code without a figure.
function countryIntensity(country: unknown, option: string, instead: string): number {
  if (typeof country !== 'string') throw invalidType(option, 'an ISO 3166-1 alpha-3 country code', country);
  const key = country.toUpperCase();
  const value = averageIntensity().data[key];
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw invalidRange(
      option,
      "an ISO 3166-1 alpha-3 country code or region known to @tgwf/co2's average intensity data (e.g. 'FRA', 'USA', 'WORLD')",
      country,
    );
  }
  // The dataset holds 0 where Ember has no figure (CAF, all hydro, is 24 g in other data): no
  // grid emits nothing, and a 0 here would turn every figure into a silent 0 g.
  if (value <= 0) {
    throw invalidRange(
      option,
      `a code with a figure in @tgwf/co2's average intensity data (it has none for '${key}': ${instead})`,
      country,
    );
  }
  return value;
}

/** Country and region codes with average intensity data (a figure above 0). */
export function gridIntensityCodes(): string[] {
  const data = averageIntensity().data;
  return Object.keys(data)
    .filter((k) => Number.isFinite(data[k]) && data[k]! > 0)
    .sort();
}

/**
 * A grid carbon intensity. `current()` answers synchronously from what is known (null when a
 * provider has not answered yet); `get()` refreshes a stale provider answer first.
 * `currentSource()` says where the figure known came from; `errors` and `lastError` say how a
 * provider fails.
 */
export class CarbonIntensity {
  /** How the intensity is known, as given: 'country:FRA', 'fixed' or 'provider'. */
  readonly source: string;
  #value: number | null;
  // #value is options.fallbackGramsPerKwh (the provider has never answered).
  #fallback = false;
  readonly #provider: IntensityProvider | undefined;
  readonly #providerName: string;
  readonly #ttlMs: number;
  #fetchedAt = -Infinity;
  // After a failed call: not before this (every scrape calls get(), and a provider that is down
  // should not be asked at every one).
  #retryAt = -Infinity;
  #inflight: Promise<number | null> | undefined;
  #errors = 0;
  /**
   * The provider's latest error while it fails (it threw or rejected, answered no number of 0 to
   * MAX_GRAMS_PER_KWH, or did not answer within 10 s); null once it answers again.
   */
  lastError: Error | null = null;

  /**
   * `name`: what errors call the options (registerMetrics() passes 'options.carbon', so that
   * they name the option given to it).
   */
  constructor(options: CarbonIntensityOptions, name = 'options') {
    this.#providerName = `${name}.provider`;
    if (options === null || typeof options !== 'object') {
      throw invalidType(name, '{ country } | { gramsPerKwh } | { provider }', options);
    }
    // One way to know the intensity: given two, one would be ignored without a word. A way given
    // as undefined is absent, as an option left undefined is everywhere else ({ country: 'FRA',
    // provider: undefined } was refused as two).
    const opts = options as unknown as Record<string, unknown>;
    const ways = WAYS.filter((k) => opts[k] !== undefined);
    if (ways.length > 1) throw new TypeError(`${name}: give one of country, gramsPerKwh and provider, not ${ways.join(' and ')}`);
    if (ways.length === 1) {
      const given = Object.fromEntries(Object.entries(opts).filter(([k, v]) => v !== undefined || !(WAYS as readonly string[]).includes(k)));
      checkKnownKeys(name, given, ways[0] === 'provider' ? ['provider', 'ttlMs', 'fallbackGramsPerKwh'] : ways);
    }
    if (ways[0] === 'country' && 'country' in options) {
      this.#value = countryIntensity(options.country, `${name}.country`, `give ${name}.gramsPerKwh instead`);
      this.source = `country:${options.country.toUpperCase()}`;
      this.#ttlMs = Infinity;
    } else if (ways[0] === 'gramsPerKwh' && 'gramsPerKwh' in options) {
      this.#value = checkIntensity(`${name}.gramsPerKwh`, options.gramsPerKwh);
      this.source = 'fixed';
      this.#ttlMs = Infinity;
    } else if (ways[0] === 'provider' && 'provider' in options) {
      if (typeof options.provider !== 'function') throw invalidType(`${name}.provider`, 'a function', options.provider);
      this.#provider = options.provider;
      this.#ttlMs =
        options.ttlMs === undefined ? 15 * 60_000 : checkIntegerInRange(`${name}.ttlMs`, options.ttlMs, 1, 7 * 86_400_000);
      this.#value =
        options.fallbackGramsPerKwh === undefined
          ? null
          : checkIntensity(`${name}.fallbackGramsPerKwh`, options.fallbackGramsPerKwh);
      this.#fallback = this.#value !== null;
      this.source = 'provider';
    } else {
      throw invalidType(name, '{ country } | { gramsPerKwh } | { provider }', options);
    }
  }

  /** The intensity now known, in gCO2e/kWh, without calling the provider. */
  current(): number | null {
    return this.#value;
  }

  /**
   * Where current() comes from: `source` for a country or a fixed figure; with a provider,
   * 'provider' (its last answer), 'provider:stale' (its last answer, which a refresh past ttlMs
   * failed to replace), 'fallback' (fallbackGramsPerKwh: it has never answered), or null (no
   * figure known: it has never answered, and there is no fallback).
   */
  currentSource(): string | null {
    if (!this.#provider) return this.source;
    if (this.#value === null) return null;
    if (this.#fallback) return 'fallback';
    // Not from the moment ttlMs has passed: a refresh in flight then would flip the label (and
    // start a series) at every ttlMs of a provider that works.
    return this.lastError === null ? 'provider' : 'provider:stale';
  }

  /** Failed calls of the provider (what lastError holds the latest of); 0 without a provider. */
  get errors(): number {
    return this.#errors;
  }

  /**
   * The intensity in gCO2e/kWh, asking the provider first when its answer is older than ttlMs
   * (after a failure, when a minute or ttlMs has passed, whichever is shorter).
   * @param now A performance.now() reading, in ms (not Date.now(): the wall clock stepped back, by
   *   NTP or a VM resumed, stopped refreshes until it caught up). A Date.now()-sized figure (over
   *   1e12) is refused with a RangeError.
   */
  async get(now = performance.now()): Promise<number | null> {
    checkNow(now);
    if (!this.#provider || now - this.#fetchedAt < this.#ttlMs || now < this.#retryAt) return this.#value;
    if (this.#inflight) return this.#inflight;
    const refresh = (async () => {
      // Past this first await before the provider is called, so that the `finally` below (which
      // clears #inflight) runs after #inflight is set, even when the provider throws at once.
      await undefined;
      try {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`provider() did not answer within ${PROVIDER_TIMEOUT_MS / 1000} s`)), PROVIDER_TIMEOUT_MS);
          timer.unref();
        });
        let answer: unknown;
        try {
          answer = await Promise.race([this.#provider!(), timeout]);
        } finally {
          clearTimeout(timer);
        }
        const v = checkIntensity('provider()', answer);
        this.#value = v;
        this.#fallback = false;
        this.lastError = null;
        this.#fetchedAt = now;
      } catch (err) {
        // Keep the last good answer; ask again in a minute (or ttlMs, if shorter).
        this.lastError = err instanceof Error ? err : new Error(String(err));
        this.#retryAt = now + Math.min(this.#ttlMs, RETRY_AFTER_FAILURE_MS);
        if (this.#errors++ === 0) this.#warn();
      } finally {
        this.#inflight = undefined;
      }
      return this.#value;
    })();
    this.#inflight = refresh;
    return refresh;
  }

  /**
   * For scrapes, which a provider taking its full 10 s would hold past Prometheus's default
   * scrape timeout: the intensity known now (the provider's last answer, or the fallback), while
   * a refresh that is due goes on and serves the next reading. Only when none is known yet does
   * it wait for the provider, at most `waitMs`: 0 to 2^31 - 1 ms (setTimeout's range; past it,
   * or NaN, it waited 1 ms), else a TypeError or RangeError naming waitMs.
   * @param now A performance.now() reading, in ms, as for get().
   */
  async within(waitMs: number, now = performance.now()): Promise<number | null> {
    checkNumberInRange('waitMs', waitMs, 0, MAX_TIMEOUT_MS);
    checkNow(now);
    const refreshed = this.get(now);
    if (this.#value !== null) return this.#value;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), waitMs);
      timer.unref();
    });
    try {
      const first = await Promise.race([refreshed.then((v) => ({ v })), late]);
      return first === null ? this.#value : first.v;
    } finally {
      clearTimeout(timer);
    }
  }

  // Once: a provider that never answers (a bad API key) otherwise showed only as carbon series
  // missing, or as its fallback.
  #warn(): void {
    const using =
      this.#value === null ? 'no intensity is known, so no grams are counted' : this.#fallback ? 'the fallback figure is used' : 'its last answer is used';
    process.emitWarning(
      `${this.#providerName} failed: ${this.lastError!.message}. Until it answers, ${using}; it is asked again within a minute. ` +
        "Its failures are counted in CarbonIntensity.errors and registerMetrics()'s jouletrace_carbon_provider_errors_total (warned once).",
      { code: 'JOULETRACE_CARBON_PROVIDER' },
    );
  }

  /** Grams CO2e for `joules` at the intensity now known (null when none is known yet). */
  grams(joules: number): number | null {
    checkJoules('joules', joules); // also while no intensity is known: the call is wrong either way
    return this.#value === null ? null : joulesToGrams(joules, this.#value);
  }
}

function checkNow(now: unknown): void {
  const what = `a performance.now() reading in ms (0 to ${MAX_MONOTONIC_MS})`;
  if (typeof now !== 'number' || Number.isNaN(now)) throw invalidType('now', what, now);
  if (!(now >= 0 && now <= MAX_MONOTONIC_MS)) {
    const hint = now > MAX_MONOTONIC_MS && Number.isFinite(now) ? ': a Date.now() reading? get() and within() run on performance.now()\'s clock; pass performance.now(), or nothing' : '';
    throw new RangeError(`${invalidRange('now', what, now).message}${hint}`);
  }
}

/** `name`: what errors call the options, as for the CarbonIntensity constructor. */
export function carbonIntensity(options: CarbonIntensityOptions | CarbonIntensity, name = 'options'): CarbonIntensity {
  return options instanceof CarbonIntensity ? options : new CarbonIntensity(options, name);
}
