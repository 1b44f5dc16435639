// The allowlist's patterns, the allow/deny decision and the address classes the proxy refuses
// after resolution (shared/docs/sandbox-security.md, "traps known from peers").
import { describe, expect, test } from 'vitest';
import {
  DEFAULT_PORTS, EgressPatternError, MAX_POLICY_ENTRIES, decide, normaliseHost, parseCidrs, parsePattern, refusedAddressReason, validatePolicy,
} from '../../../src/sandbox/network/egress-policy.js';

function rejection(p: string): string {
  try {
    parsePattern(p);
  } catch (err) {
    expect(err).toBeInstanceOf(EgressPatternError);
    return (err as Error).message;
  }
  throw new Error(`pattern ${JSON.stringify(p)} was accepted`);
}

describe('parsePattern', () => {
  test.each([
    ['pypi.org', 'exact', 'pypi.org', null],
    ['PyPI.Org.', 'exact', 'pypi.org', null],
    ['*.pythonhosted.org', 'suffix', 'pythonhosted.org', null],
    ['api.example.com:443', 'exact', 'api.example.com', 443],
    ['*.example.com:8443', 'suffix', 'example.com', 8443],
    ['10.1.2.3', 'ip', '10.1.2.3', null],
    ['10.1.2.3:8080', 'ip', '10.1.2.3', 8080],
    ['[::1]', 'ip', '::1', null],
    ['[0:0::1]:443', 'ip', '::1', 443],
    ['2001:db8::1', 'ip', '2001:db8::1', null],
    ['my_host.internal-1.example', 'exact', 'my_host.internal-1.example', null],
  ])('%s is accepted', (p, kind, host, port) => {
    expect(parsePattern(p)).toEqual({ source: p, kind, host, port });
  });

  test.each([
    ['', 'empty'],
    ['https://pypi.org', 'scheme'],
    ['pypi.org/simple', 'path'],
    ['user@pypi.org', 'user info'],
    ['py*.org', 'leading "*."'],
    ['*.*.org', 'leading "*."'],
    ['pypi.*', 'leading "*."'],
    ['*', 'leading "*."'],
    ['*.', 'empty'],
    ['a..b', 'empty label'],
    ['.pypi.org', 'empty label'],
    ['pypi.org:0', 'port'],
    ['pypi.org:65536', 'port'],
    ['pypi.org:http', 'port'],
    ['pypi.org:', 'port'],
    [`${'a.'.repeat(127)}ab`, '253'],
    ['pypi .org', 'whitespace'],
    [' pypi.org', 'whitespace'],
    ['pypi.org\t', 'whitespace'],
    ['[::1', 'closing'],
    ['[fe80::1%eth0]', 'zone'],
    ['*.10.0.0.1', 'IP address'],
    ['2130706433', 'dotted-quad'],
    ['0177.0.0.1', 'dotted-quad'],
    ['0x7f.1', 'dotted-quad'],
    ['bücher.de', 'punycode'],
    [`${'a'.repeat(64)}.com`, '63'],
  ])('%j is rejected, naming the reason (%s)', (p, why) => {
    const message = rejection(p);
    expect(message).toContain(JSON.stringify(p));
    expect(message).toContain(why);
  });
});

describe('validatePolicy', () => {
  test('names the list and the index of the bad entry', () => {
    expect(() => validatePolicy({ allow: ['pypi.org'], deny: ['ok.com', 'http://x'] })).toThrow(/deny\[1\] "http:\/\/x": it has a scheme/);
    expect(() => validatePolicy({ allow: ['pypi.org', '*.ok.com:443'], deny: [] })).not.toThrow();
  });
  test(`bounds each list to ${MAX_POLICY_ENTRIES} entries`, () => {
    const many = Array.from({ length: MAX_POLICY_ENTRIES }, (_, i) => `h${i}.example.com`);
    expect(() => validatePolicy({ allow: many, deny: many })).not.toThrow();
    expect(() => validatePolicy({ allow: [...many, 'one-more.com'], deny: [] })).toThrow(/at most 256/);
    expect(() => validatePolicy({ allow: [], deny: [...many, 'one-more.com'] })).toThrow(EgressPatternError);
  });
});

describe('decide', () => {
  const policy = { allow: ['pypi.org', '*.pythonhosted.org', 'api.example.com:8443', '10.1.2.3', '[::1]:8080', '*.evil.com'], deny: ['bad.pythonhosted.org', 'x.evil.com:443'] };
  test.each([
    ['pypi.org', 443, true],
    ['pypi.org', 80, true],
    ['PYPI.ORG.', 443, true],
    ['pypi.org', 8080, false],
    ['files.pythonhosted.org', 443, true],
    ['a.b.pythonhosted.org', 443, true],
    ['pythonhosted.org', 443, false], // *.suffix is subdomains only, not the apex
    ['evilpythonhosted.org', 443, false],
    ['bad.pythonhosted.org', 443, false], // deny wins over allow
    ['bad.pythonhosted.org', 80, false], // a deny without a port denies every port
    ['x.evil.com', 443, false],
    ['x.evil.com', 80, true], // a deny with a port denies that port only
    ['api.example.com', 8443, true],
    ['api.example.com', 443, false], // an explicit port replaces the default ports
    ['10.1.2.3', 80, true],
    ['[::1]', 8080, true],
    ['[0::1]', 8080, true],
    ['::1', 443, false],
    ['pypi.org.evil.net', 443, false],
  ])('%s:%i → allowed %s', (host, port, allowed) => {
    expect(decide(policy, host, port).allowed).toBe(allowed);
  });
  test('reasons say which pattern and why', () => {
    expect(decide(policy, 'bad.pythonhosted.org', 443).reason).toBe('bad.pythonhosted.org:443 is denied by "bad.pythonhosted.org"');
    expect(decide(policy, 'pypi.org', 443).reason).toBe('allowed by "pypi.org"');
    expect(decide(policy, 'pypi.org', 22).reason).toMatch(/^port 22 is not allowed for pypi.org by "pypi.org" \(without ":port" a pattern allows 80 and 443\)$/);
    expect(decide(policy, 'other.org', 443).reason).toBe('other.org:443 matches no allow pattern');
    expect(DEFAULT_PORTS).toEqual([80, 443]);
  });
  test('numeric hosts that only a lenient parser reads as an address are refused even when a pattern would match', () => {
    const all = { allow: ['127.0.0.1'], deny: [] };
    for (const host of ['2130706433', '0177.0.0.1', '0x7f.1', '127.1', '0x7f000001']) {
      const d = decide(all, host, 80);
      expect(d.allowed, host).toBe(false);
      expect(d.reason).toContain('decimal, octal or hex forms are refused');
    }
    expect(decide(all, '127.0.0.1', 80).allowed).toBe(true); // the canonical form matches (the address check refuses it later)
  });
  test('zone ids and junk hosts are refused', () => {
    expect(decide({ allow: ['[fe80::1]'], deny: [] }, '[fe80::1%eth0]', 443).reason).toContain('zone id');
    expect(normaliseHost('a b')).toEqual({ error: 'the host contains whitespace' });
    expect(normaliseHost('exa%mple.com')).toHaveProperty('error');
    expect(normaliseHost('ex\u0000ample.com')).toHaveProperty('error');
  });
  test('an invalid deny entry fails closed', () => {
    expect(decide({ allow: ['pypi.org'], deny: ['http://x'] }, 'pypi.org', 443).allowed).toBe(false);
  });
});

describe('refusedAddressReason', () => {
  test.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.1.2', 'loopback'],
    ['::1', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['169.254.1.1', 'link-local'],
    ['169.254.169.254', 'cloud metadata'],
    ['fe80::1', 'link-local'],
    ['febf::1', 'link-local'],
    ['fd00:ec2::254', 'cloud metadata'],
    ['100.64.0.1', 'carrier-grade NAT'],
    ['100.127.255.254', 'carrier-grade NAT'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['ff02::1', 'multicast'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['::', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['240.0.0.1', 'reserved'],
    ['::ffff:127.0.0.1', 'IPv4-mapped 127.0.0.1: loopback'],
    ['::ffff:7f00:1', 'IPv4-mapped 127.0.0.1: loopback'],
    ['::FFFF:169.254.169.254', 'IPv4-mapped 169.254.169.254: cloud metadata'],
    ['::ffff:10.0.0.1', 'private'],
    ['::127.0.0.1', 'IPv4-compatible 127.0.0.1: loopback'],
    ['::ffff:0:127.0.0.1', 'IPv4-translated 127.0.0.1: loopback'],
    ['64:ff9b::7f00:1', 'NAT64 127.0.0.1: loopback'],
    ['64:ff9b::a9fe:a9fe', 'NAT64 169.254.169.254: cloud metadata'],
    ['2002:7f00:1::', '6to4 127.0.0.1: loopback'],
    ['2002:c0a8:101::1', '6to4 192.168.1.1: private'],
    ['fe80::1%eth0', 'zone id'],
    ['2130706433', 'not a canonical IP address'],
    ['0177.0.0.1', 'not a canonical IP address'],
    ['0x7f.1', 'not a canonical IP address'],
    ['127.1', 'not a canonical IP address'],
    ['localhost', 'not a canonical IP address'],
  ])('%s is refused (%s)', (ip, why) => {
    const reason = refusedAddressReason(ip, []);
    expect(reason).toContain(ip);
    expect(reason).toContain(why);
  });

  test.each(['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '192.169.0.1', '2606:4700::1111', '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:808:808::1'])(
    '%s is public', (ip) => expect(refusedAddressReason(ip, [])).toBeNull(),
  );

  test('allowPrivate exempts the private classes inside its CIDRs, never unspecified, multicast or broadcast', () => {
    const cidrs = parseCidrs(['127.0.0.1/32', '10.0.0.0/8', 'fd00::/8', '0.0.0.0/0']);
    expect(refusedAddressReason('127.0.0.1', cidrs)).toBeNull();
    expect(refusedAddressReason('::ffff:127.0.0.1', cidrs)).toBeNull(); // the mapped form reaches the same address
    expect(refusedAddressReason('10.9.8.7', cidrs)).toBeNull();
    expect(refusedAddressReason('fd00:ec2::254', cidrs)).toBeNull();
    expect(refusedAddressReason('0.0.0.0', cidrs)).toContain('unspecified');
    expect(refusedAddressReason('224.0.0.1', cidrs)).toContain('multicast');
    expect(refusedAddressReason('255.255.255.255', cidrs)).toContain('broadcast');
    const narrow = parseCidrs(['127.0.0.2']);
    expect(refusedAddressReason('127.0.0.2', narrow)).toBeNull();
    expect(refusedAddressReason('127.0.0.3', narrow)).toContain('loopback');
    expect(refusedAddressReason('::1', narrow)).toContain('loopback');
  });
});

describe('parseCidrs', () => {
  test('IPv4 and IPv6, host bits masked, a bare address is one host', () => {
    expect(parseCidrs(['10.1.2.3/8', '192.168.1.0/24', 'fd12:3456::/32', '::1', '172.16.5.4']).map((c) => c.text))
      .toEqual(['10.0.0.0/8', '192.168.1.0/24', 'fd12:3456::/32', '::1/128', '172.16.5.4/32']);
  });
  test.each(['10.0.0.0/33', 'fd00::/129', '10.0.0/8', 'example.com/8', '10.0.0.0/8/9', '10.0.0.0/', '10.0.0.0/x', 'fe80::1%eth0/64', ''])('%j is rejected', (c) => {
    expect(() => parseCidrs(['10.0.0.0/8', c])).toThrow(/at index 1/);
  });
});
