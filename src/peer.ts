// Optional peer dependencies: npm leaves one out unless the application has it (and Yarn,
// --legacy-peer-deps and --omit=peer always do). Each entry point that needs one loads it here
// first, in a module of its own imported before the peer: a missing one is then an error naming
// what needs it and how to install it, not a bare "Cannot find module".
import { JouletraceError } from './errors';

export function requirePeer(name: string, code: string, missing: string): void {
  try {
    require(name);
  } catch (err) {
    // Only the peer itself missing: a module missing inside it is its own error, left as is.
    const e = err as NodeJS.ErrnoException;
    if (e?.code !== 'MODULE_NOT_FOUND' || !String(e.message).startsWith(`Cannot find module '${name}'`)) throw err;
    throw new JouletraceError(code, missing, err);
  }
}
