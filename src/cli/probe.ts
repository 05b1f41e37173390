// `jouletrace probe [--json]`: what this machine can measure, and how to fix what it cannot.
import { formatProbe, probe } from '../probe';

const HELP = `Usage: jouletrace probe [--json]

Reports the CPU, every energy source (msr, perf, powercap, model) with why it is or is not
usable and how to fix it, each RAPL domain's unit and wrap period, and eBPF readiness.

Options:
  --json    print the report as JSON
  -h, --help  show this help
`;

export async function probeCommand(argv: string[]): Promise<number> {
  let json = false;
  for (const arg of argv) {
    if (arg === '--json') json = true;
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(HELP);
      return 0;
    } else {
      process.stderr.write(`jouletrace probe: unknown argument ${JSON.stringify(arg)}\n\n${HELP}`);
      return 2;
    }
  }
  const report = await probe();
  process.stdout.write(json ? JSON.stringify(report, null, 2) + '\n' : formatProbe(report));
  return 0;
}
