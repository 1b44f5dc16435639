#!/usr/bin/python3
"""Per-session network helper. The service starts it as root, already inside the session's
network namespace (nsenter --net=... -- /usr/bin/python3 -I -B netns-helper.py ...; -B: no
bytecode written beside it, as root, for egress_relay.py):

  netns-helper.py UID GID SERVICE_PID PORTS_SOCK [PROXY_PORT IDLE_SECONDS MAX_CONNECTIONS]

While still root it binds PORTS_SOCK (a unix socket on the host file system, root 0600: only the
service connects) and, with PROXY_PORT, 127.0.0.1:PROXY_PORT inside the namespace. Then it drops
to UID/GID for good (no groups, no_new_privs, killed when the service dies) and serves:

- PORTS_SOCK: the service writes "PORT <n>\\n" and reads "OK\\n" or "ERR <errno>\\n"; after OK the
  bytes are relayed both ways to 127.0.0.1:<n> inside the namespace (the host cannot setns).
- 127.0.0.1:PROXY_PORT (allowlist): every connection goes to the session's egress proxy in the
  service as one end of a socketpair, passed over the service's IPC channel. The proxy decides;
  when it has connected upstream it may pass that socket back, and from then on this process
  moves the bytes between the two sockets, never through Node (egress_relay.py). The policy
  lives in the proxy; here are only pipes.

"ready" on stdout once both listen; a reason on stderr and exit 1 if anything fails before.
Python 3.11 has no os.prctl, hence ctypes for the two prctl calls.
"""
import asyncio
import ctypes
import errno
import os
import signal
import socket
import sys

# -I leaves this directory off sys.path; egress_relay.py lies beside this file (root-owned, like it).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import egress_relay  # noqa: E402

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
LINE_TIMEOUT_S = 5
CHUNK = 65536


def fail(reason):
    sys.stderr.write(f'netns-helper: {reason}\n')
    sys.stderr.flush()
    os._exit(1)


def prctl(option, value):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        fail(f'prctl({option}) failed: {os.strerror(e)}')


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def relay(r1, w1, r2, w2):
    await asyncio.gather(pipe(r1, w2), pipe(r2, w1))
    w1.close()
    w2.close()


async def on_ports(reader, writer):
    try:
        line = await asyncio.wait_for(reader.readline(), LINE_TIMEOUT_S)
        parts = line.split()
        port = int(parts[1]) if len(parts) == 2 and parts[0] == b'PORT' and parts[1].isdigit() else -1
        if not 1 <= port <= 65535:
            writer.write(b'ERR %d\n' % errno.EINVAL)
            writer.close()
            return
        try:
            r2, w2 = await asyncio.open_connection('127.0.0.1', port)
        except OSError as e:
            writer.write(b'ERR %d\n' % (e.errno or errno.EIO))
            writer.close()
            return
        writer.write(b'OK\n')
        await relay(reader, writer, r2, w2)
    except (OSError, ValueError, asyncio.TimeoutError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
        writer.close()


def bind_ports_socket(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    old = os.umask(0o177)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(128)
    finally:
        os.umask(old)
    return s


def bind_proxy_port(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('127.0.0.1', port))
    s.listen(128)
    return s


def drop_privileges(uid, gid, service_pid):
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    # After the uid change: changing credentials clears the parent-death signal.
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != service_pid:
        fail('the service is gone')


async def main(argv):
    if len(argv) not in (4, 7):
        fail('usage: netns-helper.py UID GID SERVICE_PID PORTS_SOCK [PROXY_PORT IDLE_SECONDS MAX_CONNECTIONS]')
    uid, gid, service_pid, ports_sock = int(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    egress = len(argv) == 7
    channel = os.environ.get('NODE_CHANNEL_FD', '')
    if egress and not channel.isdigit():
        fail('allowlist needs the service\'s IPC channel (NODE_CHANNEL_FD)')
    try:
        ports = bind_ports_socket(ports_sock)
        proxy = bind_proxy_port(int(argv[4])) if egress else None
    except OSError as e:
        fail(f'cannot listen: {e}')
    try:
        drop_privileges(uid, gid, service_pid)
    except OSError as e:
        fail(f'cannot drop privileges: {e}')
    await asyncio.start_unix_server(on_ports, sock=ports)
    if proxy:
        try:
            relay_ = egress_relay.Relay(int(channel), float(argv[5]), int(argv[6]))
        except OSError as e:
            fail(f'cannot use the IPC channel: {e}')
        await asyncio.get_running_loop().create_server(relay_.connection, sock=proxy)
        relay_.spawn(relay_.watch_idle())
    sys.stdout.write('ready\n')
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == '__main__':
    asyncio.run(main(sys.argv[1:]))
