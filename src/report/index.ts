// HTML reports: collect with ReportCollector while a Sampler runs, draw with renderReport().
export { ReportCollector } from './collector';
export type { ReportCollectorOptions } from './collector';
export { renderReport } from './render';
export type { ReportData, ReportRecord, ReportRecordLabel, ReportThreadSeries } from './types';
