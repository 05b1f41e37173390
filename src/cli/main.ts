// `jouletrace <command>`: dispatches to one module per command.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { packageRoot } from '../native';
import { demoCommand } from './demo';
import { keepIgnored, takeIgnoredAtStart } from './ignored-signals';
import { FATAL_SIGNALS } from './output-files';
import { probeCommand } from './probe';
import { runCommand } from './run';
import { topCommand } from './top';

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; summary: string }> = {
  probe: { run: probeCommand, summary: 'what this machine can measure (sources, domains, eBPF), and how to fix what it cannot' },
  run: { run: runCommand, summary: 'run a command and report the energy of its whole process tree (like perf stat)' },
  top: { run: topCommand, summary: 'live per-thread (or per-process) watts and joules, package power, sampler health' },
  demo: { run: demoCommand, summary: 'a built-in HTTP workload: joules per request and per thread, and an HTML report' },
  // Loaded only when run: it needs prom-client (once its arguments are parsed), an optional peer
  // dependency the other commands do without.
  serve: { run: async (argv) => (await import('./serve')).serveCommand(argv), summary: 'serve Prometheus metrics: machine energy and per-process attribution (host agent)' },
};

function help(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return [
    'Usage: jouletrace <command> [options]',
    '',
    'In-process energy measurement for Node.js: RAPL counters, eBPF per-thread attribution.',
    '',
    'Commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    'Options:',
    '  -h, --help     this help',
    '  -V, --version  the version of jouletrace',
    '',
    'Run `jouletrace <command> --help` for its options.',
    '',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  // A signal ignored at start-up (nohup) stays ignored: Node set it back to its default action.
  takeIgnoredAtStart();
  keepIgnored(FATAL_SIGNALS);
  const [command, ...rest] = argv;
  const known = command !== undefined && Object.hasOwn(COMMANDS, command); // not 'toString', '__proto__'
  if (command !== 'top') guardStdout(known ? command : undefined); // top watches its own output
  // Messages go to stderr; one whose reader went away (`serve 2>&1 | logger`, logger gone) must
  // not end the command with an uncaught 'error' event: a host agent would stop exporting.
  process.stderr.on('error', () => {});
  if (command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(help());
    return 0;
  }
  // No command is a usage error: the help goes where errors go, so `jouletrace | cmd` feeds
  // cmd nothing it could take for output.
  if (command === undefined) {
    process.stderr.write(help());
    return 2;
  }
  if (command === '--version' || command === '-V') {
    const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
    process.stdout.write(`${pkg.version}\n`);
    return 0;
  }
  if (!known) {
    process.stderr.write(`jouletrace: unknown command ${JSON.stringify(command)}\n\n${help()}`);
    return 2;
  }
  return COMMANDS[command].run(rest);
}

// A report that stdout cannot take (a full disk: `> /dev/full`) fails the command with one line,
// as an output file does (125 for run), instead of an uncaught 'error' event and a stack trace.
// A reader that went away (`| head`) ends nothing: the status stays the command's.
// The help and the version are written under the same guard. command: undefined for those.
function guardStdout(command: string | undefined): void {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') return;
    process.stderr.write(`jouletrace${command === undefined ? '' : ` ${command}`}: cannot write to stdout: ${e.message}\n`);
    process.exit(command === 'run' ? 125 : 1);
  });
}
