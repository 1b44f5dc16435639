# The Python side of a kernel, placed at /sandbox/main.py and run by the environment's
# interpreter as `python /sandbox/main.py <control fd>`. The service reads this file
# (src/sandbox/kernel/kernel-process.ts) and hands it to bwrap on a descriptor; the build copies it
# to dist beside the compiled TypeScript.
#
# Channels: requests arrive length-prefixed (4-byte big-endian) JSON on stdin, which the driver
# moves to a private descriptor (fd 0 becomes /dev/null): `run` there, read by the main thread
# itself (no hand-over between threads before a cell starts); `interrupt` and `ping` on a second
# pipe (its number is the second argument), read by a thread of their own so they get through
# while a cell runs. Frames leave only on the control pipe; all three are moved to close-on-exec
# descriptors. User code keeps fd 1 and 2 for its output, so nothing
# it prints can be read as a frame. After each cell the driver writes the per-call marker the
# service chose to fd 1 and fd 2, so the service knows where the cell's output ends; not on a
# stream the service has already read to the end (see _drained), where it would only cost a
# wake-up of the service.
#
# Rich outputs (display(), the final expression's value, matplotlib figures) leave as `display`
# frames. To keep them in order with the cell's stdout/stderr, each is preceded by a sync token
# (the call's sync prefix, its sequence number, \x1f\x1e) written to fd 1 and fd 2: the service
# releases display n only once both streams have passed token n (src/sandbox/kernel/output-order.ts).
#
# Requests:  {type:'run', id, code, marker, sync, max_result_chars, max_outputs_chars}
#            {type:'interrupt', id}  {type:'ping'}
# Frames:    {type:'ready', pid, python} once at start;  {type:'pong'};
#            {type:'display', id, seq, kind: 'display_data'|'execute_result', data: {mime: value},
#             sync: {stdout: bool, stderr: bool}}  (sync: token written or not)
#            {type:'done', id, result: repr|null, error: null|{type, message, line, traceback[]},
#             interrupted: bool, outputs_truncated: bool,
#             markers: {stdout: bool, stderr: bool}}  (markers: written or not)

import ast
import base64
import builtins
import fcntl
import json
import linecache
import os
import signal
import stat
import struct
import sys
import threading
import traceback
import types

import _bubble_rich as rich

DRIVER_FILE = __file__
WORKSPACE = os.getcwd()


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _private(number):
    fd = os.dup(number)
    os.set_inheritable(fd, False)
    os.close(number)
    return fd


def _private_fds(ctl_number, side_number):
    # os.dup gives a non-inheritable (close-on-exec) descriptor: children of user code get
    # neither the control pipe nor the request streams.
    ctl = _private(ctl_number)
    side = _private(side_number)
    req = os.dup(0)
    os.set_inheritable(req, False)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return ctl, req, side


CTL, REQ, SIDE = _private_fds(int(sys.argv[1]), int(sys.argv[2]))
_ctl_lock = threading.Lock()


def _frame(obj):
    data = json.dumps(obj, ensure_ascii=True).encode('ascii')
    return struct.pack('>I', len(data)) + data


def send(*objs):
    # Several frames leave in one write: the service wakes once for all of them.
    data = b''.join(_frame(obj) for obj in objs)
    with _ctl_lock:
        _write_all(CTL, data)


class _State:
    running = None       # id of the cell being executed
    armed = False        # whether SIGINT may raise KeyboardInterrupt now
    interrupt_id = None  # last cell the service asked to interrupt
    figure_count = 0
    sync = ''            # this call's sync prefix
    display_seq = 0      # display frames sent in this call
    outputs_used = 0     # characters of rich outputs sent in this call
    outputs_budget = 0
    outputs_truncated = False


_state = _State()
_MAIN_ID = threading.main_thread().ident


def _on_sigint(signum, frame):
    # Only while a cell runs, and once per request: a late signal never lands in driver code.
    if _state.armed:
        _state.armed = False
        raise KeyboardInterrupt


def _request_interrupt(cell_id):
    _state.interrupt_id = cell_id
    if _state.running == cell_id and _state.armed:
        signal.pthread_kill(_MAIN_ID, signal.SIGINT)


class _Requests:
    # The requests arriving on one descriptor (each read by one thread only). Reads take what is
    # there, up to 64 KiB, so a small request costs one read() instead of two (length, then body):
    # a syscall less per cell on the warm path, where each one passes the sandbox's filter.
    def __init__(self, fd):
        self.fd = fd
        self.buf = bytearray()

    def _fill(self, n):
        # At least n bytes buffered; False at the end of the stream.
        while len(self.buf) < n:
            chunk = os.read(self.fd, max(65536, n - len(self.buf)))
            if not chunk:
                return False
            self.buf += chunk
        return True

    def next(self):
        # The next request, None at the end; a request that is not JSON is logged and skipped.
        while True:
            if not self._fill(4):
                return None
            size = struct.unpack_from('>I', self.buf)[0]
            if not self._fill(4 + size):
                return None
            body = bytes(self.buf[4:4 + size])
            del self.buf[:4 + size]
            try:
                msg = json.loads(body)
                if isinstance(msg, dict):
                    return msg
                raise ValueError('not an object')
            except Exception as exc:
                send({'type': 'log', 'message': 'bad request: %r' % (exc,)})


def _side_requests():
    requests = _Requests(SIDE)
    while True:
        msg = requests.next()
        if msg is None:
            break
        kind = msg.get('type')
        if kind == 'interrupt':
            _request_interrupt(msg.get('id'))
        elif kind == 'ping':
            send({'type': 'pong'})
    os._exit(0)  # the service closed its end (it is gone, even mid-cell): nobody is left to answer


# --- rich outputs ---------------------------------------------------------------------------

# One output larger than this is dropped (a frame must stay under the service's frame limit).
MAX_ONE_OUTPUT_CHARS = 1000000


def _counted(data):
    # The output's sync token and sequence number, or None when it is over the budget.
    size = rich.bundle_size(data)
    if size > MAX_ONE_OUTPUT_CHARS or _state.outputs_used + size > _state.outputs_budget:
        _state.outputs_truncated = True
        return None
    _state.outputs_used += size
    _state.display_seq += 1
    seq = _state.display_seq
    return seq, ('%s%d\x1f\x1e' % (_state.sync, seq)).encode('utf-8')


def _display_frame(kind, data, seq, sync):
    return {'type': 'display', 'id': _state.running, 'seq': seq, 'kind': kind, 'data': data,
            'sync': sync}


def _emit(kind, data):
    if _state.running is None:
        return  # between cells (a thread of user code): nobody is listening
    counted = _counted(data)
    if counted is None:
        return
    seq, token = counted
    _flush()
    sync = {'stdout': _mark(1, token), 'stderr': _mark(2, token)}
    send(_display_frame(kind, data, seq, sync))


def _figures_open():
    plt = sys.modules.get('matplotlib.pyplot')
    return plt is not None and bool(plt.get_fignums())


def _plain(obj):
    return _clip(repr(obj), _state.outputs_budget)


def display(*objs, raw=False, **ignored):
    """Show each object as a rich output (IPython's display(); raw=True: objs are MIME dicts)."""
    for obj in objs:
        if raw and isinstance(obj, dict):
            data = rich.raw_bundle(obj)
        else:
            data = rich.mime_bundle(obj, _plain)
        _emit('display_data', data)


# --- matplotlib: figures become workspace files and image/png outputs -----------------------


def _save_figures():
    plt = sys.modules.get('matplotlib.pyplot')
    if plt is None:
        return []
    saved = []
    for num in plt.get_fignums():
        _state.figure_count += 1
        name = 'figure-%s-%d.png' % (_state.running, _state.figure_count)
        try:
            figure = plt.figure(num)
            png = rich.figure_png(figure)
            with open(os.path.join(WORKSPACE, name), 'wb') as f:
                f.write(png)
            saved.append(name)
        except Exception as exc:
            sys.stderr.write('could not save figure %s: %s\n' % (name, exc))
            continue
        _emit('display_data', {'image/png': base64.b64encode(png).decode('ascii'),
                               'text/plain': _plain(figure)})
    plt.close('all')
    return saved


def _show(*args, **kwargs):
    _save_figures()


def _patch_pyplot(module):
    module.show = _show


def _patch_ipython_display(module):
    # Outside an IPython shell, IPython's display() prints repr(): here it makes rich outputs.
    module.display = display


# Modules whose import is followed by a patch; never imported by the driver itself.
_PATCHES = {
    'matplotlib.pyplot': _patch_pyplot,
    'IPython.core.display_functions': _patch_ipython_display,
}


class _ImportHook:
    busy = False

    def find_spec(self, name, path=None, target=None):
        patch = _PATCHES.get(name)
        if patch is None or self.busy:
            return None
        import importlib.util
        self.busy = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
            return spec
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            patch(module)
        spec.loader.exec_module = exec_module
        return spec


# --- cells ----------------------------------------------------------------------------------

def _no_input(prompt=''):
    raise EOFError('input() is not available: run_code has no interactive stdin. '
                   'Put the data in the code or in a file in the workspace.')


def _compile(code, filename):
    tree = ast.parse(code, filename, 'exec')
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, filename, 'exec', dont_inherit=True)
    expr = compile(last, filename, 'eval', dont_inherit=True) if last is not None else None
    return body, expr


def _clip(text, limit):
    if limit is None or len(text) <= limit:
        return text
    head = (limit + 1) // 2
    tail = limit - head
    omitted = len(text) - head - tail
    return text[:head] + '\n[... %d characters omitted ...]\n' % omitted + (text[-tail:] if tail else '')


def _without_driver(te, seen):
    # The user sees their cells and the libraries they called, never this file.
    if id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename != DRIVER_FILE])
    for chained in (te.__cause__, te.__context__):
        if chained is not None:
            _without_driver(chained, seen)
    for sub in getattr(te, 'exceptions', None) or ():
        _without_driver(sub, seen)


def _describe(exc, filename, compiling, limit):
    tb = None if compiling else exc.__traceback__
    te = traceback.TracebackException(type(exc), exc, tb, compact=True)
    _without_driver(te, set())
    text = ''.join(te.format())
    line = None
    for frame in te.stack:
        if frame.filename == filename:
            line = frame.lineno
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        line = exc.lineno
    try:
        message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    except Exception:
        message = '<exception str() failed>'
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
    try:
        sys.stderr.write(text)
    except Exception:
        pass
    return {'type': type(exc).__name__, 'message': _clip(message, limit), 'line': line,
            'traceback': _clip(text, limit).rstrip('\n').split('\n')}


def _flush():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass


def _mark(fd, marker):
    try:
        _write_all(fd, marker)
        return True
    except OSError:
        return False


# Linux ioctls for the bytes written to fd and not yet read by the other end: SIOCOUTQ on a Unix
# socket (what the service's stdio pipes are: Node.js makes them with socketpair), FIONREAD on a
# FIFO (from either end).
_SIOCOUTQ = 0x5411
_FIONREAD = 0x541B


def _unread(fd, request):
    return struct.unpack('i', fcntl.ioctl(fd, request, b'\0\0\0\0'))[0]


def _drained(fd):
    # True when everything written to fd has been read by the service. It hands what it reads on
    # to the call before it reads the next frame, so after this check a marker on fd would only
    # cost it a wake-up and tell it nothing. False when unknown (a file a cell pointed fd 1 at; an
    # ioctl the sandbox refuses).
    # SIOCOUTQ first, without an fstat: fd is the service's socket unless the cell replaced it,
    # so the usual case costs one syscall. The same request number is TIOCOUTQ on a terminal (a
    # cell's own: a marker written there would not reach the service anyway); on anything else
    # it fails, and a FIFO is then asked with FIONREAD.
    try:
        return _unread(fd, _SIOCOUTQ) == 0
    except OSError:
        pass
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            return _unread(fd, _FIONREAD) == 0
    except OSError:
        pass
    return False


def _mark_unread(fd, data):
    # The end-of-cell marker (with the final value's sync token), written only when the service
    # has output of this cell still to read on fd (see _drained).
    return False if _drained(fd) else _mark(fd, data)


def _run(req, user_ns):
    cell_id = req['id']
    filename = '<cell-%s>' % cell_id
    code = req['code']
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    result = None
    error = None
    compiling = True
    limit = req.get('max_result_chars')
    _state.figure_count = 0
    _state.sync = req.get('sync') or ''
    _state.display_seq = 0
    _state.outputs_used = 0
    _state.outputs_budget = req.get('max_outputs_chars') or 0
    _state.outputs_truncated = False
    _state.running = cell_id
    # The final value's output, when nothing can come after it: it leaves with the end of the
    # cell, its sync token in the same write as the marker and its frame with `done`.
    last = None
    try:
        _state.armed = True
        if _state.interrupt_id == cell_id:
            _state.armed = False
            raise KeyboardInterrupt
        body, expr = _compile(code, filename)
        compiling = False
        exec(body, user_ns)
        if expr is not None:
            value = eval(expr, user_ns)
            if value is not None:
                user_ns['_'] = value
                result = _clip(repr(value), limit)
                bundle = rich.mime_bundle(value, lambda _obj: result)
                if _figures_open():
                    _emit('execute_result', bundle)
                else:
                    counted = _counted(bundle)
                    if counted is not None:
                        last = ('execute_result', bundle) + counted
        _save_figures()
    except BaseException as exc:
        _state.armed = False
        error = _describe(exc, filename, compiling, limit)
    finally:
        _state.armed = False
    interrupted = _state.interrupt_id == cell_id
    _flush()
    marker = req['marker'].encode('utf-8')
    frames = []
    if last is not None:
        kind, bundle, seq, token = last
        written = {'stdout': _mark_unread(1, token + marker), 'stderr': _mark_unread(2, token + marker)}
        frames.append(_display_frame(kind, bundle, seq, written))
        markers = written
    else:
        markers = {'stdout': _mark_unread(1, marker), 'stderr': _mark_unread(2, marker)}
    _state.running = None
    frames.append({'type': 'done', 'id': cell_id, 'result': result, 'error': error,
                   'interrupted': interrupted, 'outputs_truncated': _state.outputs_truncated,
                   'markers': markers})
    send(*frames)


def main():
    user_module = types.ModuleType('__main__')
    user_module.__dict__['__builtins__'] = builtins
    sys.modules['__main__'] = user_module
    sys.argv = ['']
    if sys.path and sys.path[0] == os.path.dirname(DRIVER_FILE):
        sys.path[0] = ''
    builtins.input = _no_input
    builtins.display = display
    sys.meta_path.insert(0, _ImportHook())
    signal.signal(signal.SIGINT, _on_sigint)
    threading.Thread(target=_side_requests, name='kernel-interrupts', daemon=True).start()
    send({'type': 'ready', 'pid': os.getpid(), 'python': sys.version.split()[0]})
    requests = _Requests(REQ)
    while True:
        req = requests.next()
        if req is None:
            os._exit(0)  # the service closed our stdin: nobody is left to answer
        if req.get('type') != 'run':
            continue
        try:
            _run(req, user_module.__dict__)
        except BaseException as exc:
            # A failure of the driver itself (or a signal that slipped past the disarm): the
            # call still gets its answer, without markers to wait for.
            send({'type': 'done', 'id': req.get('id'), 'result': None,
                  'error': {'type': type(exc).__name__, 'message': 'kernel driver: %r' % (exc,),
                            'line': None, 'traceback': []},
                  'interrupted': isinstance(exc, KeyboardInterrupt),
                  'markers': {'stdout': False, 'stderr': False}})


main()
