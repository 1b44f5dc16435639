// The pty WebSocket through a listening app and a real sandboxed bash: keystrokes and output,
// resize, Ctrl-C, scrollback on reconnect, the close codes (the process always survives them), the
// exit frame, and who may connect (key in header or ?access_token=, Origin).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type WebSocket from 'ws';
import { bwrapUsable, IS_ROOT } from '../helpers/sandbox.js';
import { PTY_MAX_PENDING_INPUT_BYTES } from '../../src/server/routes/pty.js';
import { AUTH, closed, KEY, listeningApp, openWs, processStatus, startProcess, until, type Listening } from '../helpers/ws.js';

interface Term { ws: WebSocket; screen: () => string; clear: () => void; texts: string[] }

describe.skipIf(!IS_ROOT || !bwrapUsable())('pty WebSocket', () => {
  let t: Listening;
  let pid: string;
  const url = (p = pid, q = '') => `${t.wsBase}/v1/sessions/tty/processes/${p}/pty${q}`;

  async function attach(opts: { url?: string; headers?: Record<string, string> } = {}): Promise<Term> {
    let screen = '';
    const texts: string[] = [];
    const ws = await openWs(opts.url ?? url(), { headers: opts.headers ?? AUTH }, (d, isBinary) => {
      if (isBinary) screen += d.toString('utf8');
      else texts.push(d.toString());
    });
    // Without escape sequences (bash's bracketed-paste toggles) and with \n for \r\n.
    // eslint-disable-next-line no-control-regex -- terminal escape sequences are what is stripped
    const plain = () => screen.replace(/\x1b\[[?0-9;]*[A-Za-z]/g, '').replace(/\r+\n/g, '\n').replace(/\r/g, '');
    return { ws, screen: plain, clear: () => (screen = ''), texts };
  }
  const type = (term: Term, s: string) => term.ws.send(Buffer.from(s));

  beforeAll(async () => {
    t = await listeningApp({ WS_MAX_FRAME_BYTES: '65536', ALLOWED_ORIGINS: '["https://allowed.example"]' });
    const res = await t.app.inject({ method: 'POST', url: '/v1/sessions', headers: AUTH, payload: { session_id: 'tty' } });
    expect(res.statusCode, res.body).toBe(201);
    pid = (await startProcess(t, 'tty', { argv: ['/bin/bash', '--norc', '-i'], pty: { cols: 80, rows: 24 } })).pid;
  }, 60_000);

  afterAll(async () => {
    await t.close();
  });

  it('bash answers, follows a resize, and \\x03 interrupts sleep', async () => {
    const term = await attach();
    await until('the first prompt', () => /[$#] $/.test(term.screen()));
    type(term, "PS1='P> '\n");
    await until('the new prompt', () => term.screen().endsWith('P> '));
    term.clear();
    type(term, 'echo $((6*7))\n');
    await until('42', () => /\n42\nP> $/.test(term.screen()));

    term.ws.send(JSON.stringify({ type: 'resize', cols: 132, rows: 43 }));
    await new Promise((r) => setTimeout(r, 100));
    term.clear();
    type(term, 'stty size; test -t 0 && echo tty-yes\n');
    await until('stty size', () => /43 132\ntty-yes\n/.test(term.screen()));

    term.clear();
    type(term, 'sleep 100\n');
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    type(term, '\x03');
    await until('the prompt after ^C', () => /\^C\nP> $/.test(term.screen()));
    expect(Date.now() - started).toBeLessThan(5000);
    term.clear();
    type(term, 'echo status=$?\n');
    await until('status 130', () => term.screen().includes('status=130'));
    term.ws.close();
    await closed(term.ws);
    expect(await processStatus(t, 'tty', pid)).toBe('running');
  });

  it('a reconnect gets the scrollback first; closing leaves the process running', async () => {
    const again = await attach();
    await until('scrollback', () => again.screen().includes('status=130'));
    expect(again.screen()).toContain('42');
    again.ws.close();
    await closed(again.ws);
    await new Promise((r) => setTimeout(r, 200));
    expect(await processStatus(t, 'tty', pid)).toBe('running');
  });

  it('a frame over WS_MAX_FRAME_BYTES closes with 1009, a bad resize or bad JSON with 1008; the process carries on', async () => {
    const big = await attach();
    const gone = closed(big.ws);
    big.ws.send(Buffer.alloc(65_537, 0x61));
    expect((await gone).code).toBe(1009);
    for (const frame of [{ type: 'resize', cols: 0, rows: 24 }, { type: 'resize', cols: 100_000, rows: 24 }, { type: 'resize', cols: 80.5, rows: 24 }, { type: 'paste' }, 'not json {']) {
      const term = await attach();
      const shut = closed(term.ws);
      term.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
      const { code, reason } = await shut;
      expect(code, JSON.stringify(frame)).toBe(1008);
      expect(reason.length).toBeGreaterThan(0);
    }
    expect(await processStatus(t, 'tty', pid)).toBe('running');
    const term = await attach();
    term.clear();
    type(term, 'stty size; echo still-$((40+2))\n');
    await until('still alive, size unchanged', () => /43 132\nstill-42/.test(term.screen()));
    term.ws.close();
  });

  it('the key may come as ?access_token=; a wrong key, no key or a foreign Origin is refused before the handshake', async () => {
    (await attach({ url: url(pid, `?access_token=${KEY}`), headers: {} })).ws.close();
    await expect(attach({ url: url(pid, '?access_token=wrong-key-0123456789'), headers: {} })).rejects.toThrow('status 401');
    await expect(attach({ headers: {} })).rejects.toThrow('status 401');
    await expect(attach({ headers: { ...AUTH, origin: 'https://evil.example' } })).rejects.toThrow('status 403');
    (await attach({ headers: { ...AUTH, origin: 'https://allowed.example' } })).ws.close();
    (await attach({ headers: { ...AUTH, origin: t.base } })).ws.close();
    await expect(attach({ url: url('p-missing') })).rejects.toThrow('status 404');
    const plain = await t.app.inject({ method: 'GET', url: `/v1/sessions/tty/processes/${pid}/pty`, headers: AUTH });
    expect(plain.statusCode).toBe(426);
    // ?access_token= is for WebSockets only.
    expect((await t.app.inject({ method: 'GET', url: `/v1/sessions/tty/processes/${pid}?access_token=${KEY}` })).statusCode).toBe(401);
  });

  it('keystrokes a program does not read are held only up to PTY_MAX_PENDING_INPUT_BYTES (the socket is no longer read); the process runs on, and its end still closes the socket', async () => {
    const sleeper = (await startProcess(t, 'tty', { argv: ['python3', '-c', 'import time; time.sleep(1000)'], pty: { cols: 80, rows: 24 } })).pid;
    const probe = (await t.sessions.processesOf('tty')).attachPty(sleeper);
    let most = 0;
    const sample = setInterval(() => (most = Math.max(most, probe.pendingInput())), 2);
    try {
      const term = await attach({ url: url(sleeper) });
      const frame = Buffer.alloc(64 * 1024, 0x61); // WS_MAX_FRAME_BYTES is 65536 here
      const total = 8 * 1024 * 1024;
      for (let sent = 0; sent < total; sent += frame.length) term.ws.send(frame);
      // The relay and the terminal take 64 KiB each; the service then holds up to the bound and stops reading.
      await until('input backed up', () => probe.pendingInput() >= PTY_MAX_PENDING_INPUT_BYTES);
      await new Promise((r) => setTimeout(r, 1500));
      most = Math.max(most, probe.pendingInput());
      // The bound, overshot by at most what one socket read had already brought in.
      expect(most).toBeLessThanOrEqual(PTY_MAX_PENDING_INPUT_BYTES + 256 * 1024);
      expect(term.ws.readyState).toBe(term.ws.OPEN);
      expect(await processStatus(t, 'tty', sleeper)).toBe('running');
      // The end of the process still reaches the held-back client: exit frame, then 1000.
      const shut = closed(term.ws);
      expect((await t.app.inject({ method: 'DELETE', url: `/v1/sessions/tty/processes/${sleeper}`, headers: AUTH })).statusCode).toBeLessThan(300);
      const started = Date.now();
      expect(await shut).toEqual({ code: 1000, reason: 'process exited' });
      expect(Date.now() - started).toBeLessThan(5000);
      expect(JSON.parse(term.texts.at(-1) ?? '{}')).toMatchObject({ type: 'exit', pid: sleeper });
    } finally {
      clearInterval(sample);
    }
  }, 30_000);

  it('a burst of a few KiB to a program that reads is taken as typed', async () => {
    const term = await attach();
    term.clear();
    type(term, `echo ${'y'.repeat(4000)} | wc -c\n`);
    await until('wc', () => /\n4001\nP> $/.test(term.screen()));
    term.clear();
    type(term, 'echo burst-$((40+2))\n');
    await until('echo', () => /\nburst-42\nP> $/.test(term.screen()));
    term.ws.close();
    await closed(term.ws);
  });

  it('a process without a pty is 409; when the program exits the client gets {"type":"exit",...} and close 1000', async () => {
    const piped = await startProcess(t, 'tty', { argv: ['/bin/sleep', '30'] });
    await expect(attach({ url: url(piped.pid) })).rejects.toThrow('status 409');
    const term = await attach();
    const shut = closed(term.ws);
    type(term, 'exit 3\n');
    expect(await shut).toEqual({ code: 1000, reason: 'process exited' });
    const exit = JSON.parse(term.texts.at(-1) ?? '{}') as Record<string, unknown>;
    expect(exit).toMatchObject({ type: 'exit', pid, exit_code: 3, status: 'exited' });
  });
});
