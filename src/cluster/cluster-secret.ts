// The headers one replica puts on every request it sends another: who forwarded it, and the
// shared CLUSTER_SECRET. A request that says it was forwarded is trusted (handled here, never
// forwarded again) only with the right secret, compared as digests in constant time; without it,
// it is refused (401 CLUSTER_UNAUTHORIZED), so the marker is never an open door.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

export const FORWARDED_BY_HEADER = 'x-bubble-forwarded-by';
export const SECRET_HEADER = 'x-bubble-cluster-secret';

export function secretDigest(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}

export function hasClusterSecret(expected: Buffer | null, headers: IncomingHttpHeaders): boolean {
  const got = headers[SECRET_HEADER];
  if (expected === null || typeof got !== 'string') return false;
  return timingSafeEqual(secretDigest(got), expected);
}

/** Whether the request says it came from another replica (trusted only with hasClusterSecret). */
export function saysForwarded(headers: IncomingHttpHeaders): boolean {
  return headers[FORWARDED_BY_HEADER] !== undefined;
}

/** Headers for a request from this replica to a peer. */
export function peerHeaders(self: string, secret: string): Record<string, string> {
  return { [FORWARDED_BY_HEADER]: self, [SECRET_HEADER]: secret };
}
