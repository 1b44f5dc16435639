// A session's (or one-shot execution's) network policy as the service keeps it: the mode, and for
// allowlist the two pattern lists. The record on disk is the source of truth; the egress proxy
// reads it on every new connection, so a PATCH takes effect at once.
import { z } from 'zod';
import { InvalidNetworkPolicyError } from '../errors.js';
import { EgressPatternError, MAX_HOST_LENGTH, MAX_POLICY_ENTRIES, parsePattern } from '../sandbox/network/egress-policy.js';

export const NETWORK_MODES = ['none', 'allowlist', 'outbound'] as const;
export type NetworkModeName = (typeof NETWORK_MODES)[number];

/** Most patterns in one list (allow or deny): each is checked on every new connection. */
export const MAX_NETWORK_PATTERNS = MAX_POLICY_ENTRIES;
/** Longest pattern: the longest host name and `:65535`. */
export const MAX_NETWORK_PATTERN_CHARS = MAX_HOST_LENGTH + 6;

export const NetworkPolicyRecordSchema = z.object({
  mode: z.enum(NETWORK_MODES),
  allow: z.array(z.string()).optional(),
  deny: z.array(z.string()).optional(),
});
/** As stored and shown: allowlist always carries both lists; the other modes carry none. */
export type NetworkPolicy = z.infer<typeof NetworkPolicyRecordSchema>;

/** What a request gave (mode filled in), in the stored shape. */
export function normalizeNetwork(input: { mode?: NetworkModeName | undefined; allow?: string[] | undefined; deny?: string[] | undefined } | undefined): NetworkPolicy {
  const mode = input?.mode ?? 'none';
  if (mode !== 'allowlist') return { mode };
  return { mode, allow: [...(input?.allow ?? [])], deny: [...(input?.deny ?? [])] };
}

export function sameNetwork(a: NetworkPolicy, b: NetworkPolicy): boolean {
  const list = (l: string[] | undefined) => JSON.stringify(l ?? []);
  return a.mode === b.mode && list(a.allow) === list(b.allow) && list(a.deny) === list(b.deny);
}

/** The lists the egress proxy decides with (empty for the modes without lists). */
export function egressPolicyOf(p: NetworkPolicy): { allow: readonly string[]; deny: readonly string[] } {
  return { allow: p.allow ?? [], deny: p.deny ?? [] };
}

/**
 * Checks every pattern of both lists with the egress proxy's own parser, before anything is
 * changed. `field` prefixes the name in the error: `network` gives `network.allow.2: ...`.
 */
export function checkNetworkPatterns(p: { allow?: readonly string[] | undefined; deny?: readonly string[] | undefined }, field: string): void {
  for (const list of ['allow', 'deny'] as const) {
    const entries = p[list] ?? [];
    const name = field === '' ? list : `${field}.${list}`;
    if (entries.length > MAX_NETWORK_PATTERNS) throw new InvalidNetworkPolicyError(name, `at most ${MAX_NETWORK_PATTERNS} patterns`);
    entries.forEach((pattern, i) => {
      try {
        parsePattern(pattern);
      } catch (err) {
        if (err instanceof EgressPatternError) throw new InvalidNetworkPolicyError(`${name}.${i}`, `${JSON.stringify(pattern)}: ${err.reason}`);
        throw err;
      }
    });
  }
}
