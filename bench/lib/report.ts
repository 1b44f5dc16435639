// Machine description and the printed table: each row a figure, its baseline, the ratio, the
// issue's target and PASS/FAIL (or "info" when the issue sets no target for it).
import { execFileSync } from 'node:child_process';
import os from 'node:os';

export interface MachineInfo {
  cpu_model: string;
  cores: number;
  kernel: string;
  os: string;
  node: string;
  bwrap: string;
  python: string;
  date: string;
  /** 1, 5 and 15 minute load averages when the figures were written: other work on the machine skews them. */
  load_average: number[];
}

function tryRun(file: string, args: string[]): string {
  try {
    return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch {
    return 'unknown';
  }
}

export function machineInfo(): MachineInfo {
  let distro = 'unknown';
  const osRelease = tryRun('/bin/cat', ['/etc/os-release']);
  const pretty = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(osRelease);
  if (pretty?.[1]) distro = pretty[1];
  return {
    cpu_model: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    kernel: `${os.type()} ${os.release()}`,
    os: distro,
    node: process.version,
    bwrap: tryRun('bwrap', ['--version']),
    python: tryRun('/usr/bin/python3', ['--version']),
    date: new Date().toISOString(),
    load_average: os.loadavg().map((v) => Math.round(v * 100) / 100),
  };
}

export interface Row {
  metric: string;
  service: string;
  baseline: string;
  ratio: string;
  target: string;
  /** PASS, FAIL or info. */
  result: string;
}

export const fmt = (v: number, digits = 2) => (Number.isFinite(v) ? v.toFixed(digits) : 'n/a');

export function verdict(pass: boolean): string {
  return pass ? 'PASS' : 'FAIL';
}

export function renderTable(rows: Row[]): string {
  const head: Row = { metric: 'metric', service: 'service', baseline: 'baseline', ratio: 'ratio', target: 'target', result: 'result' };
  const keys = Object.keys(head) as (keyof Row)[];
  const all = [head, ...rows];
  const width = Object.fromEntries(keys.map((k) => [k, Math.max(...all.map((r) => r[k].length))])) as Record<keyof Row, number>;
  const line = (r: Row) => keys.map((k) => r[k].padEnd(width[k])).join(' | ').trimEnd();
  const rule = keys.map((k) => '-'.repeat(width[k])).join('-|-');
  return [line(head), rule, ...rows.map(line)].join('\n');
}
