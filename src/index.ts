export { JouletraceError } from './errors';
export { openSource, EnergySource } from './sources';
export type { DomainName, DomainInfo, DomainReading, SourceReading, SkippedSource } from './sources';
export { SOURCE_NAMES } from './source-options';
export type { SourceOptions, SourceName, CpuVendor } from './source-options';
export { probe, formatProbe } from './probe';
export type { ProbeReport, ProbeSource, ProbeDomain, ProbeOptions, ProbeBpfReadiness } from './probe';
export { Sampler, attachSpans } from './sampler';
export { SpanChannel } from './span-channel';
export { RequestTracker, trackRequest, endRequestAccounting } from './requests';
export type { RequestTrackerOptions, RequestMode, RequestToken } from './requests';
export type { SpanChannelOptions } from './span-channel';
export type { SpanResult, SpanLabelStats, RequestRecord, RouteStats } from './span-types';
export type {
  SamplerOptions,
  OverflowPolicy,
  ThreadsBackend,
  DomainDescription,
  DomainTotal,
  Totals,
  Sample,
  SampleReading,
  SamplerStats,
  ThreadEnergy,
  Attribution,
  AttributionParts,
  BaselineResult,
  SpanContext,
} from './sampler';
export { RingReader, SampleFlags } from './ring-reader';
export type { RingNative, RingGeometry } from './ring-reader';
export { bpfReadiness, openThreadTracker } from './threads';
export type {
  BpfReadiness,
  ThreadTracker,
  ThreadSnapshot,
  ThreadTrackerOptions,
  ThreadTrackerStats,
  ThreadTimesResult,
  CpuTimesResult,
  ThreadBackend,
  BpfProgram,
  RepairSwitchIns,
} from './threads';
export { CarbonIntensity, carbonIntensity, joulesToGrams, gridIntensity, gridIntensityCodes, JOULES_PER_KWH, MAX_GRAMS_PER_KWH } from './carbon';
export type { CarbonIntensityOptions } from './carbon';
export { ReportCollector, renderReport } from './report';
export type { ReportCollectorOptions, ReportData, ReportRecord, ReportRecordLabel, ReportThreadSeries } from './report';
