// Every self-test probe, in the order they start and are reported.
import type { ProbeSpec } from './self-test-kit.js';
import { IDENTITY_PROBES, CAPABILITY_PROBES, SECCOMP_PROBES } from './self-test-probes-privileges.js';
import { FILESYSTEM_PROBES, ENVIRONMENT_PROBES, FD_PROBES } from './self-test-probes-filesystem.js';
import { LIMIT_PROBES, SLOW_LIMIT_PROBES } from './self-test-probes-limits.js';
import { NAMESPACE_PROBES, NETWORK_PROBES } from './self-test-probes-namespaces.js';
import { PROC_PROBES } from './self-test-probes-proc.js';

export const PROBES: readonly ProbeSpec[] = [
  // The slow ones first, so the pool overlaps them with the quick ones.
  ...SLOW_LIMIT_PROBES,
  ...IDENTITY_PROBES,
  ...CAPABILITY_PROBES,
  ...NAMESPACE_PROBES,
  ...NETWORK_PROBES,
  ...FILESYSTEM_PROBES,
  ...ENVIRONMENT_PROBES,
  ...PROC_PROBES,
  ...FD_PROBES,
  ...SECCOMP_PROBES,
  ...LIMIT_PROBES,
];
