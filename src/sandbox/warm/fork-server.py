# A session's fork server: a sandbox built once for the session (its workspace, environment,
# volumes, uid, limits, network namespace), its interpreter started and the environment's preload
# modules imported, that forks one process tree per execution instead of a new sandbox being built
# for each. It never runs a program itself; every execution runs in a child that, before the
# program's first instruction, is in a cgroup of its own (placed there by the service), in new
# PID, mount, IPC, UTS and cgroup namespaces with a fresh /proc, /dev, /tmp and /sandbox, holds no
# capability, has no_new_privs and the service's seccomp filter: what a cold sandbox has.
#
# Run as `python /sandbox/fork-server.py <channel fd> <preload,...>`, with CAP_SYS_ADMIN and
# CAP_SETPCAP in the sandbox's own user namespace (bwrap --cap-add; they are needed for the
# per-execution namespaces and mounts and are dropped before any program runs), and without the
# seccomp filter (each execution loads it). fork-body.py (loaded beside this file) has the code
# and the protocol.
import sys

AT_START = set(sys.modules)
STARTUP_PATH = list(sys.path)
sys.path[:] = [p for p in sys.path if p not in ('', '/workspace', '/sandbox')]

import importlib.util  # noqa: E402


def load(name, source):
    """As in warm-launch.py: from the service's .pyc beside the source when it fits, else the source."""
    for path in (source + 'c', source):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            return module
        except (ImportError, OSError, EOFError, ValueError):
            if path == source:
                raise


load('_bubble_fork', '/sandbox/fork-body.py').main(
    AT_START, STARTUP_PATH, load('_bubble_warm', '/sandbox/warm-body.py'), load('_bubble_launch', '/sandbox/launch.py'))
