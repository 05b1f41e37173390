// Signals that were ignored when jouletrace started: nohup's SIGHUP; SIGINT and SIGQUIT for a
// background job of a script. Node sets every ignored signal (but SIGPIPE and SIGXFSZ) back to its
// default action as it starts, and libuv every one from 1 to 31 in a child it spawns, so that
// `nohup jouletrace run -- job &` ended, job and all, on a hang-up. They cannot be read from
// jouletrace's own /proc/self/status: bin/jouletrace.js, started as a program, reads the mask in
// sh before Node starts and passes it on in JOULETRACE_SIGIGN. Started as `node
// bin/jouletrace.js`, nothing could read it: no signal is taken as ignored.
import { constants } from 'node:os';

const ENV = 'JOULETRACE_SIGIGN';
let mask = 0n;

/**
 * Takes the mask (/proc's SigIgn: bit N-1 for signal N) from the environment, and removes it
 * there, so that the command does not inherit it. main() calls it before any command runs.
 */
export function takeIgnoredAtStart(env: NodeJS.ProcessEnv = process.env): void {
  const v = env[ENV];
  delete env[ENV];
  // The line of /proc/self/status as the bin's sh took it ("SigIgn:\t0000000000001000"), or the mask.
  const m = v === undefined ? null : /^(?:SigIgn:)?\s*([0-9a-fA-F]{1,16})\s*$/.exec(v);
  mask = m ? BigInt(`0x${m[1]}`) : 0n;
}

/**
 * The signals from 1 to 31 ignored at start-up, by number, but SIGKILL and SIGSTOP (never
 * ignored): those Node and libuv set back to their default. Higher ones stay ignored in the
 * command without help.
 */
export function ignoredAtStart(): number[] {
  const out: number[] = [];
  for (let n = 1; n <= 31; n++) if (n !== constants.signals.SIGKILL && n !== constants.signals.SIGSTOP && (mask >> BigInt(n - 1)) & 1n) out.push(n);
  return out;
}

export function wasIgnored(sig: NodeJS.Signals): boolean {
  const n = (constants.signals as Record<string, number>)[sig];
  return n !== undefined && n >= 1 && n <= 64 && ((mask >> BigInt(n - 1)) & 1n) === 1n;
}

/** Of `signals`, those jouletrace may handle: not ignored at start-up. */
export function notIgnored(signals: readonly NodeJS.Signals[]): NodeJS.Signals[] {
  return signals.filter((s) => !wasIgnored(s));
}

/**
 * Those of `signals` ignored at start-up are ignored again (a listener that does nothing): Node
 * set them back to their default action, which ends jouletrace.
 */
export function keepIgnored(signals: readonly NodeJS.Signals[]): void {
  for (const s of signals) if (wasIgnored(s)) process.on(s, ignore);
}

function ignore(): void {}
