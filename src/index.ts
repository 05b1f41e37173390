export { JouletraceError } from './errors';
