// `jouletrace probe [--json]`: what this machine can measure, and how to fix what it cannot.
import { formatProbe, probe } from '../probe';
import { flagsOf, parseArgs, probeInFlagWords, reportUsageError, SOURCE_PATH_HELP, SOURCE_PATH_SPECS, sourcePathOptions, type OptionSpec, type SourcePaths } from './args';

const SPECS: OptionSpec[] = [
  { name: 'json', type: 'flag' },
  { name: 'help', short: 'h', type: 'flag' },
  ...SOURCE_PATH_SPECS,
];

const HELP = `Usage: jouletrace probe [--json] [source paths]

Reports the CPU, every energy source (msr, perf, powercap, model) with why it is or is not
usable and how to fix it, each RAPL domain's unit and wrap period, and eBPF readiness.
Exits 0 when some source can measure (the model counts), 1 when none can.

Options:
  --json    print the report as JSON
  -h, --help  show this help

${SOURCE_PATH_HELP}`;

export async function probeCommand(argv: string[]): Promise<number> {
  let json: boolean;
  let paths: SourcePaths;
  try {
    const { options } = parseArgs(argv, SPECS);
    if (options.help) {
      process.stdout.write(HELP);
      return 0;
    }
    json = options.json === true;
    paths = sourcePathOptions(options);
  } catch (e) {
    return reportUsageError('probe', HELP, e);
  }
  const report = await probe(paths);
  process.stdout.write(json ? JSON.stringify(report, null, 2) + '\n' : formatProbe(probeInFlagWords(report, flagsOf(SPECS))));
  // For scripts: whether a Sampler could start here at all.
  return report.sources.some((s) => s.available) ? 0 : 1;
}
