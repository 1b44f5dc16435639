// `bubble-sandbox run bash` in a real terminal: tmux gives the CLI a pseudo-terminal of its own
// (a private tmux server per test, on its own socket), the test types into it with send-keys and
// reads the screen with capture-pane. Real processes of bin/bubble-sandbox.js (the built dist/),
// real sandboxes. In CI tmux is installed (.ci/run) and the test runs; elsewhere it is skipped
// only when tmux is missing.
// What the research found (tmux 3.3a): keys sent before the first prompt may be lost (bash
// flushes typeahead), capture-pane trims trailing spaces, and #{pane_dead_status} is not reliable:
// the exit status is written to a file by the pane's own shell.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { BIN, cleanEnv, makeTempDir, PROJECT_ROOT, removeTempDir, sleep } from '../helpers/host-env.js';

const HAS_TMUX = spawnSync('tmux', ['-V'], { stdio: 'ignore' }).status === 0;
const PROMPT = /^P> ?$/m;

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

class TmuxPane {
  private readonly socket = `bs-cli-run-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  private readonly session = 'cli';
  private readonly env = (() => {
    const env = cleanEnv();
    delete env.TMUX; // the test may itself run inside tmux
    return env;
  })();

  /** Starts a detached session of cols x rows running `command` (a shell command line). */
  constructor(command: string, cols: number, rows: number) {
    this.tmux('-f', '/dev/null', 'new-session', '-d', '-s', this.session, '-x', String(cols), '-y', String(rows), command);
    this.tmux('set-option', '-t', this.session, 'remain-on-exit', 'on');
  }

  tmux(...args: string[]): string {
    return execFileSync('tmux', ['-L', this.socket, ...args], { env: this.env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  screen(): string {
    return this.tmux('capture-pane', '-p', '-t', this.session);
  }

  keys(...keys: string[]): void {
    this.tmux('send-keys', '-t', this.session, ...keys);
  }

  /** A line typed and entered. */
  line(text: string): void {
    this.keys('-l', text);
    this.keys('Enter');
  }

  async waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const screen = this.screen();
      if (pattern.test(screen)) return screen;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${String(pattern)}; the screen:\n${screen}`);
      await sleep(50);
    }
  }

  kill(): void {
    spawnSync('tmux', ['-L', this.socket, 'kill-server'], { env: this.env, stdio: 'ignore' });
  }
}

const panes: TmuxPane[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const p of panes.splice(0)) p.kill();
  for (const d of dirs.splice(0)) removeTempDir(d);
});

async function fileContent(file: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    if (text.endsWith('\n')) return text.trim();
    await sleep(50);
  }
  return '';
}

describe.skipIf(!HAS_TMUX && !process.env.CI)('bubble-sandbox run bash in a terminal (tmux)', () => {
  test('a prompt, output, stty size following a resize, Ctrl-C interrupting sleep, exit status passed through, terminal restored', async () => {
    const dir = makeTempDir('bs-cli-tmux-', 0o755);
    dirs.push(dir);
    const status = path.join(dir, 'status');
    const before = path.join(dir, 'stty-before');
    const after = path.join(dir, 'stty-after');
    // The pane's shell records the terminal settings around the run, and the CLI's exit status.
    const cli = `${shellQuote(process.execPath)} ${shellQuote(BIN)} run bash`;
    const command = `cd ${shellQuote(PROJECT_ROOT)} && stty -g > ${shellQuote(before)}; ${cli}; echo $? > ${shellQuote(status)}; stty -g > ${shellQuote(after)}`;
    const pane = new TmuxPane(command, 80, 24);
    panes.push(pane);

    await pane.waitFor(/bash-[\d.]+[#$]/, 20_000); // keys sent before the first prompt may be lost
    pane.line("PS1='P> '");
    await pane.waitFor(PROMPT);
    pane.line('echo $((6*7))');
    await pane.waitFor(/^42$/m);
    pane.line('test -t 0 && echo IS-A-TTY; echo TERM=$TERM');
    await pane.waitFor(/^TERM=xterm-256color$/m);
    expect(pane.screen()).toMatch(/^IS-A-TTY$/m);
    pane.line('stty size');
    await pane.waitFor(/^24 80$/m);

    pane.tmux('resize-window', '-t', 'cli', '-x', '100', '-y', '30');
    await sleep(200); // SIGWINCH reaches the CLI, which resizes the sandbox's terminal
    pane.line('clear; stty size');
    await pane.waitFor(/^30 100$/m);

    pane.line('clear; sleep 100');
    await sleep(500); // sleep is running in the foreground
    const t0 = Date.now();
    pane.keys('C-c');
    await pane.waitFor(/^\^C\n(?:.*\n)*P> ?$/m, 5000);
    expect(Date.now() - t0).toBeLessThan(2000);
    pane.line('echo rc=$?');
    await pane.waitFor(/^rc=130$/m);

    pane.line('exit 5');
    expect(await fileContent(status, 15_000)).toBe('5');
    // Raw mode was undone on the way out: the settings are the ones from before the run.
    expect(await fileContent(after, 5000)).toBe(fs.readFileSync(before, 'utf8').trim());
  }, 60_000);
});
